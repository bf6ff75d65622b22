//! The hostile pass over the API (issue 21, "authentication and reach"), as
//! assertions: two USER keys (alice, bob), an ADMIN and a SERVICE key against
//! every transport — HTTP through the router, and SSE, WebSocket and
//! Socket.IO on a real socket where the transport matters.

use crate::auth::admin;
use crate::{Server, ServerConfig, TrustedProxy};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use gleitzeit_auth::{ApiKey, Permission, Role};
use gleitzeit_providers::function::FunctionProvider;
use gleitzeit_providers::Registry;
use gleitzeit_runtime::{Runtime, RuntimeConfig};
use gleitzeit_store::{MemoryStore, Store};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tower::ServiceExt;

const WORKFLOW: &str = "name: t\ntasks:\n  - id: a\n    method: function/call\n    parameters: {name: sum, args: {numbers: [1, 2]}}\n";

struct Fixture {
    router: Router,
    store: Arc<dyn Store>,
    admin: String,
    alice: String,
    bob: String,
    service: String,
    /// `http://…` when the fixture also listens on a socket.
    url: Option<String>,
}

async fn fixture() -> Fixture {
    start(Registry::new(), None, false).await
}

async fn start(mut registry: Registry, proxy: Option<TrustedProxy>, listen: bool) -> Fixture {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    registry.register(Arc::new(FunctionProvider));
    let runtime = Runtime::new(store.clone(), registry, RuntimeConfig::default());
    let server = Server::new(
        runtime,
        ServerConfig {
            auth_required: true,
            trusted_proxy: proxy,
            ..ServerConfig::default()
        },
    );
    let router = server.router();
    let key = async |name: &str, role: Role| {
        admin::create_user(store.as_ref(), name, None, role)
            .await
            .unwrap();
        let (key, _) = admin::create_key(store.as_ref(), name, "test", None, None)
            .await
            .unwrap();
        key.reveal().to_string()
    };
    let (admin, alice, bob, service) = (
        key("admin", Role::Admin).await,
        key("alice", Role::User).await,
        key("bob", Role::User).await,
        key("service", Role::Service).await,
    );
    let url = if listen {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(server.serve(listener, std::future::pending()));
        Some(url)
    } else {
        None
    };
    Fixture {
        router,
        store,
        admin,
        alice,
        bob,
        service,
        url,
    }
}

struct Call<'a> {
    method: Method,
    uri: &'a str,
    key: Option<&'a str>,
    body: &'a str,
    peer: Option<&'a str>,
    headers: &'a [(&'a str, &'a str)],
}

impl<'a> Call<'a> {
    fn get(uri: &'a str, key: Option<&'a str>) -> Call<'a> {
        Call {
            method: Method::GET,
            uri,
            key,
            body: "",
            peer: None,
            headers: &[],
        }
    }

    fn post(uri: &'a str, key: Option<&'a str>, body: &'a str) -> Call<'a> {
        Call {
            method: Method::POST,
            body,
            ..Call::get(uri, key)
        }
    }

    fn from(self, peer: &'a str) -> Call<'a> {
        Call {
            peer: Some(peer),
            ..self
        }
    }
}

/// Status, the raw body, and the headers.
async fn send(router: &Router, call: Call<'_>) -> (StatusCode, String, axum::http::HeaderMap) {
    let mut request = Request::builder().method(call.method).uri(call.uri);
    if let Some(key) = call.key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    if call.body.starts_with('{') {
        request = request.header("content-type", "application/json");
    }
    for (name, value) in call.headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Body::from(call.body.to_string())).unwrap();
    if let Some(peer) = call.peer {
        let addr: SocketAddr = peer.parse().unwrap();
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
    (
        status,
        String::from_utf8_lossy(&bytes).into_owned(),
        headers,
    )
}

async fn json_of(router: &Router, call: Call<'_>) -> (StatusCode, Value) {
    let (status, body, _) = send(router, call).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

impl Fixture {
    async fn submit(&self, key: &str) -> String {
        let (status, made) = json_of(
            &self.router,
            Call::post("/api/v1/workflows", Some(key), WORKFLOW),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{made}");
        let id = made["workflow_id"].as_str().unwrap().to_string();
        for _ in 0..500 {
            if self
                .store
                .workflow(&id)
                .await
                .unwrap()
                .is_some_and(|w| w.state.is_terminal())
            {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{id} did not finish");
    }

    /// A second key of a user, with its id, for revoking.
    async fn another_key(&self, user: &str) -> (String, String) {
        let (key, record) = admin::create_key(self.store.as_ref(), user, "more", None, None)
            .await
            .unwrap();
        (key.reveal().to_string(), record.id)
    }

    fn ws_url(&self, path: &str) -> String {
        let url = self.url.as_ref().expect("a listening fixture");
        format!("{}{path}", url.replacen("http://", "ws://", 1))
    }
}

/// An SSE response's body, read until `done` says so or it ends.
async fn read_sse(body: Body, done: impl Fn(&str) -> bool) -> (String, bool) {
    let mut body = body;
    let mut text = String::new();
    // Keep-alive comments arrive every 15 s, so a stream that should have
    // ended is caught by an overall deadline, not one per frame.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if done(&text) {
            return (text, false);
        }
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("stream still open after 20 s; so far: {text:?}"));
        match frame {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    text.push_str(&String::from_utf8_lossy(&data));
                }
            }
            Some(Err(error)) => panic!("stream broke: {error}"),
            None => return (text, true),
        }
    }
}

/// Revokes a key through the auth API, as an ADMIN.
async fn revoke(f: &Fixture, id: &str) {
    let (status, body) = json_of(
        &f.router,
        Call::post(
            &format!("/api/v1/auth/keys/{id}/revoke"),
            Some(&f.admin),
            "",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn open_sse(router: &Router, key: &str) -> Body {
    let request = Request::builder()
        .uri("/api/v1/events")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body()
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next Socket.IO packet that is not an Engine.IO ping; `None` once the
/// connection closes.
async fn sio_next(socket: &mut Socket) -> Option<String> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await
            .expect("socket.io stalled");
        match frame {
            Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
                socket.send(Message::Text("3".into())).await.ok()?;
            }
            Some(Ok(Message::Text(text))) => return Some(text.to_string()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// Connects to Socket.IO with `auth`; the packets up to the connect answer
/// (and its error, when refused).
async fn sio_connect(f: &Fixture, auth: Value) -> (Socket, Vec<String>) {
    let (mut socket, _) =
        tokio_tungstenite::connect_async(f.ws_url("/socket.io/?EIO=4&transport=websocket"))
            .await
            .unwrap();
    let open = sio_next(&mut socket).await.unwrap();
    assert!(open.starts_with('0'), "{open}");
    socket
        .send(Message::Text(format!("40{auth}").into()))
        .await
        .unwrap();
    let mut packets = Vec::new();
    while let Some(packet) = sio_next(&mut socket).await {
        let last = packet.starts_with("42[\"error\"") || packet.starts_with("42[\"subscribed\"");
        packets.push(packet);
        if last {
            break;
        }
    }
    (socket, packets)
}

#[tokio::test]
async fn socketio_authenticates_through_the_limiter_and_the_audit_log() {
    let f = start(Registry::new(), None, true).await;
    let wrong = ApiKey::generate().unwrap();
    let mut answers = Vec::new();
    for _ in 0..11 {
        let (_, packets) = sio_connect(&f, json!({"api_key": wrong.reveal()})).await;
        answers.push(packets.join(" "));
    }
    for answer in &answers[..10] {
        assert!(answer.contains("GZ4004"), "{answer}");
    }
    assert!(answers[10].contains("GZ4005"), "{}", answers[10]);
    // Like every HTTP failure, each one is in the audit log, never the key.
    let log = f.store.audit_log(0, 100).await.unwrap();
    let failures: Vec<_> = log
        .iter()
        .filter(|e| e.action == "auth.failure" && e.target.as_deref() == Some("/socket.io/"))
        .collect();
    assert!(failures.len() >= 10, "{log:?}");
    assert!(failures
        .iter()
        .all(|e| e.client.as_deref() == Some("127.0.0.1")));
    assert!(!format!("{log:?}").contains(&wrong.reveal()[10..]));
    // The same address with a valid key still connects.
    let (_, packets) = sio_connect(&f, json!({"api_key": f.alice})).await;
    assert!(
        packets.iter().any(|p| p.starts_with("42[\"subscribed\"")),
        "{packets:?}"
    );
}

#[tokio::test]
async fn failures_count_per_address_and_key_id_and_never_refuse_a_valid_key() {
    let f = fixture().await;
    let wrong = ApiKey::generate().unwrap();
    let attacker = "10.1.2.3:5555";
    for _ in 0..10 {
        let (status, _, _) = send(
            &f.router,
            Call::get("/api/v1/workflows", Some(wrong.reveal())).from(attacker),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body, headers) = send(
        &f.router,
        Call::get("/api/v1/workflows", Some(wrong.reveal())).from(attacker),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("GZ4005"), "{body}");
    assert_eq!(headers["retry-after"], "60");
    // Alice shares the attacker's address (a NAT, a proxy): her key works.
    let (status, body, _) = send(
        &f.router,
        Call::get("/api/v1/workflows", Some(&f.alice)).from(attacker),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Guesses at one key id (lists and audit entries show ids), from many
    // addresses: that id is limited, the real key behind it is not.
    let forged = format!("{}{}", &f.bob[..10], "0".repeat(f.bob.len() - 10));
    let mut last = StatusCode::OK;
    for i in 0..11 {
        let peer = format!("10.2.0.{i}:4000");
        last = send(
            &f.router,
            Call::get("/api/v1/workflows", Some(&forged)).from(&peer),
        )
        .await
        .0;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    let (status, _, _) = send(
        &f.router,
        Call::get("/api/v1/workflows", Some(&f.bob)).from("10.2.0.1:4000"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Someone else's first mistake is just a 401.
    let theirs = ApiKey::generate().unwrap();
    let (status, _, _) = send(
        &f.router,
        Call::get("/api/v1/workflows", Some(theirs.reveal())).from("10.9.9.9:1"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_is_counted_on_its_own() {
    let proxy = TrustedProxy {
        header: axum::http::HeaderName::from_static("x-forwarded-for"),
        addresses: vec!["10.0.0.1".parse().unwrap()],
    };
    let f = start(Registry::new(), Some(proxy), false).await;
    // A new made-up key each time, so only the address can be counted.
    let fresh = || ApiKey::generate().unwrap().reveal().to_string();
    let via_proxy = |client: &'static str| -> [(&'static str, &'static str); 1] {
        [("x-forwarded-for", client)]
    };
    let guesser = via_proxy("203.0.113.5");
    let mut last = StatusCode::OK;
    for _ in 0..11 {
        let wrong = fresh();
        let mut call = Call::get("/api/v1/workflows", Some(&wrong)).from("10.0.0.1:80");
        call.headers = &guesser;
        last = send(&f.router, call).await.0;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    // Another client behind the same proxy is not the guesser.
    let other = via_proxy("198.51.100.7, 10.0.0.1");
    let wrong = fresh();
    let mut call = Call::get("/api/v1/workflows", Some(&wrong)).from("10.0.0.1:80");
    call.headers = &other;
    assert_eq!(send(&f.router, call).await.0, StatusCode::UNAUTHORIZED);
    // The audit log names the client, not the proxy.
    let log = f.store.audit_log(0, 100).await.unwrap();
    assert!(log
        .iter()
        .any(|e| e.client.as_deref() == Some("203.0.113.5")));
    // From anyone but the proxy the header is not believed: a client cannot
    // pick a fresh address for each guess.
    let mut last = StatusCode::OK;
    for i in 0..11 {
        let spoof = [(
            "x-forwarded-for",
            ["192.0.2.1", "192.0.2.2", "192.0.2.3"][i % 3],
        )];
        let wrong = fresh();
        let mut call = Call::get("/api/v1/workflows", Some(&wrong)).from("10.7.7.7:80");
        call.headers = &spoof;
        last = send(&f.router, call).await.0;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn open_sse_streams_close_on_revocation_disable_and_expiry() {
    let f = fixture().await;
    // Revoked through the auth API: the stream ends at once with GZ4004.
    let (key, id) = f.another_key("alice").await;
    let stream = open_sse(&f.router, &key).await;
    let reader = tokio::spawn(read_sse(stream, |_| false));
    // The scenario: the key is revoked while the stream is being read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    revoke(&f, &id).await;
    let (text, ended) = reader.await.unwrap();
    assert!(
        ended && text.contains("event: error") && text.contains("GZ4004"),
        "{text}"
    );

    // The user disabled straight in the database (as `auth users disable`
    // without a server does): the periodic check ends it.
    let stream = open_sse(&f.router, &f.bob).await;
    let reader = tokio::spawn(read_sse(stream, |_| false));
    admin::disable_user(f.store.as_ref(), "bob").await.unwrap();
    let (text, ended) = reader.await.unwrap();
    assert!(ended && text.contains("GZ4004"), "{text}");

    // A key that expires while its stream is open: GZ4002.
    let (key, mut record) = admin::create_key(f.store.as_ref(), "alice", "soon", None, Some(1))
        .await
        .unwrap();
    record.expires_ms = Some(gleitzeit_store::now_ms() + 1_500);
    f.store.put_key(&record).await.unwrap();
    let stream = open_sse(&f.router, key.reveal()).await;
    let (text, ended) = read_sse(stream, |_| false).await;
    assert!(ended && text.contains("GZ4002"), "{text}");

    // A key that still holds keeps its stream.
    let stream = open_sse(&f.router, &f.alice).await;
    let still =
        tokio::time::timeout(Duration::from_millis(2_500), read_sse(stream, |_| false)).await;
    assert!(still.is_err(), "a valid key's stream ended: {still:?}");
}

#[tokio::test]
async fn open_websocket_and_socketio_streams_close_with_the_code() {
    let f = start(Registry::new(), None, true).await;
    // WebSocket: an error frame, then a close frame whose code is the GZ code.
    let (key, id) = f.another_key("alice").await;
    let mut request = f.ws_url("/api/v1/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    admin::revoke_key(f.store.as_ref(), &id).await.unwrap();
    let mut error = None;
    let close = loop {
        let frame = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("websocket stayed open after revocation");
        match frame {
            Some(Ok(Message::Text(text))) => error = Some(text.to_string()),
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 4004, "{close:?}");
    assert!(close.reason.contains("GZ4004"), "{close:?}");
    assert!(error.is_some_and(|e| e.contains("GZ4004")));

    // Socket.IO: told why (`error` with the code), then disconnected.
    let (key, id) = f.another_key("alice").await;
    let (mut socket, packets) = sio_connect(&f, json!({"api_key": key})).await;
    assert!(
        packets.iter().any(|p| p.starts_with("42[\"subscribed\"")),
        "{packets:?}"
    );
    revoke(&f, &id).await;
    let mut after = Vec::new();
    while let Some(packet) = sio_next(&mut socket).await {
        let disconnect = packet == "41";
        after.push(packet);
        if disconnect {
            break;
        }
    }
    assert!(
        after
            .iter()
            .any(|p| p.starts_with("42[\"error\"") && p.contains("GZ4004")),
        "{after:?}"
    );
}

#[tokio::test]
async fn prefixes_resolve_only_among_the_callers_workflows() {
    let f = fixture().await;
    let alices = [f.submit(&f.alice).await, f.submit(&f.alice).await];
    let bobs = f.submit(&f.bob).await;
    // Every id starts with `wf_`: for Bob that is his one workflow.
    let (status, found) =
        json_of(&f.router, Call::get("/api/v1/workflows/wf_", Some(&f.bob))).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["workflow_id"], bobs.as_str());
    // With two of his own, the prefix is ambiguous — among his ids only.
    let bobs_second = f.submit(&f.bob).await;
    let (status, body, _) = send(&f.router, Call::get("/api/v1/workflows/wf_", Some(&f.bob))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body.contains(&bobs) && body.contains(&bobs_second),
        "{body}"
    );
    for id in &alices {
        assert!(!body.contains(id.as_str()), "alice's id leaked: {body}");
    }

    // Alice's id and an id nobody has answer byte for byte the same, on
    // every route that takes an id.
    let theirs = &alices[0];
    let missing = format!("wf_{}", "0".repeat(theirs.len() - 3));
    assert!(f.store.workflow(&missing).await.unwrap().is_none());
    for (method, path) in [
        (Method::GET, "/api/v1/workflows/{}"),
        (Method::GET, "/api/v1/workflows/{}/tasks/a"),
        (Method::GET, "/api/v1/workflows/{}/events"),
        (Method::POST, "/api/v1/workflows/{}/cancel"),
        (Method::POST, "/api/v1/workflows/{}/resume"),
        (Method::GET, "/api/v1/events/head?workflow_id={}"),
    ] {
        let mut answers = Vec::new();
        for id in [
            theirs.as_str(),
            &theirs[..12],
            missing.as_str(),
            &missing[..12],
        ] {
            let uri = path.replace("{}", id);
            let call = Call {
                method: method.clone(),
                ..Call::get(&uri, Some(&f.bob))
            };
            let (status, body, _) = send(&f.router, call).await;
            answers.push((status, body.replace(id, "ID")));
        }
        assert_eq!(answers[0].0, StatusCode::NOT_FOUND, "{path}: {answers:?}");
        assert_eq!(answers[0], answers[2], "{path}: foreign vs missing id");
        assert_eq!(answers[1], answers[3], "{path}: foreign vs missing prefix");
    }
    // Alice herself still finds hers by prefix.
    let (status, _) = json_of(
        &f.router,
        Call::get(
            &format!("/api/v1/workflows/{}", &theirs[..12]),
            Some(&f.alice),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn every_permission_is_enforced_on_a_route_and_nodes_refuse_users() {
    let f = fixture().await;
    // A route for each permission of the table, answered (not 404) for ADMIN.
    let routes: &[(Method, &str)] = &[
        (Method::POST, "/api/v1/workflows"),
        (Method::GET, "/api/v1/workflows"),
        (Method::POST, "/api/v1/workflows/wf_x/cancel"),
        (Method::GET, "/api/v1/events/head"),
        (Method::GET, "/api/v1/stats"),
        (Method::GET, "/api/v1/providers"),
        (Method::GET, "/metrics"),
        (Method::GET, "/api/v1/nodes"),
        (Method::GET, "/api/v1/auth/users"),
        (Method::GET, "/api/v1/auth/keys"),
        (Method::GET, "/api/v1/auth/audit"),
    ];
    for permission in Permission::ALL {
        let route = routes
            .iter()
            .find(|(m, p)| crate::auth::permission_for(m, p) == Some(permission))
            .unwrap_or_else(|| panic!("no route needs {permission:?}: enforce it or remove it"));
        let call = Call {
            method: route.0.clone(),
            body: WORKFLOW,
            ..Call::get(route.1, Some(&f.admin))
        };
        let (status, body, _) = send(&f.router, call).await;
        assert!(!body.contains("GZ6007"), "{route:?} is not a route: {body}");
        assert_ne!(status, StatusCode::FORBIDDEN, "{route:?}");
    }
    for (key, allowed) in [(&f.alice, false), (&f.service, false), (&f.admin, true)] {
        let (status, body) = json_of(&f.router, Call::get("/api/v1/nodes", Some(key))).await;
        if allowed {
            assert_eq!(status, StatusCode::OK, "{body}");
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
            assert_eq!(body["code"], "GZ4003");
        }
    }
}

#[tokio::test]
async fn a_key_reaches_no_further_than_its_user() {
    let f = fixture().await;
    let (status, made) = json_of(
        &f.router,
        Call::post(
            "/api/v1/auth/keys",
            Some(&f.admin),
            r#"{"user":"alice","name":"ci","role":"SERVICE"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let narrowed = made["key"].as_str().unwrap().to_string();
    // SERVICE reads metrics, USER does not: a SERVICE key of a USER does not.
    let (status, body) = json_of(&f.router, Call::get("/metrics", Some(&narrowed))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "GZ4003");
    // USER cancels, SERVICE does not: neither does this key.
    let id = f.submit(&narrowed).await;
    let (status, _) = json_of(
        &f.router,
        Call::post(
            &format!("/api/v1/workflows/{id}/cancel"),
            Some(&narrowed),
            "",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // What both allow still works, on alice's own workflows.
    let (status, body) = json_of(
        &f.router,
        Call::get(&format!("/api/v1/workflows/{id}"), Some(&f.alice)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, me) = json_of(&f.router, Call::get("/api/v1/auth/whoami", Some(&narrowed))).await;
    assert_eq!(
        (me["user"].as_str(), me["role"].as_str()),
        (Some("alice"), Some("SERVICE"))
    );
}

#[tokio::test]
async fn stats_and_the_event_head_count_only_the_callers_work() {
    let f = fixture().await;
    let bobs = f.submit(&f.bob).await;
    let alices = [f.submit(&f.alice).await, f.submit(&f.alice).await];
    let total = |stats: &Value, field: &str| -> u64 {
        stats[field]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum()
    };
    let (status, mine) = json_of(&f.router, Call::get("/api/v1/stats", Some(&f.bob))).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_eq!(total(&mine, "workflows_by_state"), 1, "{mine}");
    assert_eq!(total(&mine, "tasks_by_state"), 1, "{mine}");
    assert_eq!(mine["window"]["tasks_finished"], 1, "{mine}");
    let (_, all) = json_of(&f.router, Call::get("/api/v1/stats", Some(&f.admin))).await;
    assert_eq!(total(&all, "workflows_by_state"), 3, "{all}");

    let own_head = f.store.latest_event_seq_of(&bobs).await.unwrap();
    let global = f.store.latest_event_seq().await.unwrap();
    assert!(own_head > 0 && own_head < global);
    let (_, head) = json_of(&f.router, Call::get("/api/v1/events/head", Some(&f.bob))).await;
    assert_eq!(head["latest_event_seq"], own_head, "{head}");
    let (_, head) = json_of(&f.router, Call::get("/api/v1/events/head", Some(&f.admin))).await;
    assert_eq!(head["latest_event_seq"], global);
    let (_, head) = json_of(
        &f.router,
        Call::get(
            &format!("/api/v1/events/head?workflow_id={}", alices[1]),
            Some(&f.alice),
        ),
    )
    .await;
    assert_eq!(head["latest_event_seq"], global);
    let (status, _) = json_of(
        &f.router,
        Call::get(
            &format!("/api/v1/events/head?workflow_id={}", alices[1]),
            Some(&f.bob),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn health_tells_strangers_only_the_status_and_never_probes_per_call() {
    use gleitzeit_providers::llm::{Dialect, EndpointConfig, LlmConfig, LlmProvider};
    let llm = gleitzeit_testkit::OllamaDouble::start(Default::default())
        .await
        .unwrap();
    let mut registry = Registry::new();
    registry.register(Arc::new(
        LlmProvider::new(
            LlmConfig {
                endpoints: vec![EndpointConfig {
                    name: "double".into(),
                    url: llm.url(),
                    kind: Some(Dialect::Ollama),
                    ..EndpointConfig::default()
                }],
                health_interval_secs: 0.0,
                ..LlmConfig::default()
            },
            None,
        )
        .unwrap(),
    ));
    let f = start(registry, None, false).await;
    for uri in ["/health", "/api/v1/health"] {
        let (status, body) = json_of(&f.router, Call::get(uri, None)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!({"status": "healthy"}), "{uri}");
    }
    let (_, detail) = json_of(&f.router, Call::get("/api/v1/health", Some(&f.bob))).await;
    assert!(detail["providers"]["llm"].is_object(), "{detail}");
    assert!(detail.get("version").is_some(), "{detail}");
    // One round of provider checks serves everyone for a while.
    let before = llm.stats().requests;
    for _ in 0..20 {
        json_of(&f.router, Call::get("/health", None)).await;
        json_of(&f.router, Call::get("/api/v1/health", Some(&f.admin))).await;
    }
    assert_eq!(
        llm.stats().requests,
        before,
        "health calls probed the LLM endpoint"
    );
    // A wrong key on /health is still a wrong key.
    let wrong = ApiKey::generate().unwrap();
    let (status, _) = json_of(&f.router, Call::get("/health", Some(wrong.reveal()))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    llm.shutdown().await;
}

#[tokio::test]
async fn streams_open_with_one_time_tickets_never_with_keys_in_urls() {
    let f = fixture().await;
    let (status, made) = json_of(
        &f.router,
        Call::post("/api/v1/stream-tickets", Some(&f.alice), ""),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["expires_in"], 30);
    let ticket = made["ticket"].as_str().unwrap().to_string();
    assert!(!ticket.contains(&f.alice[4..]));
    let uri = format!("/api/v1/events?after=0&ticket={ticket}");
    let request = Request::builder().uri(&uri).body(Body::empty()).unwrap();
    let response = f.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The stream is alice's: her workflow's events, not bob's.
    let hers = f.submit(&f.alice).await;
    let bobs = f.submit(&f.bob).await;
    let (text, _) = read_sse(response.into_body(), |t| {
        t.contains(&hers) && t.contains("workflow_completed")
    })
    .await;
    assert!(!text.contains(&bobs), "{text}");
    // Once only.
    let (status, body) = json_of(&f.router, Call::get(&uri, None)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("GZ4006")),
        "{body}"
    );
    // Only streams take tickets.
    let (_, made) = json_of(
        &f.router,
        Call::post("/api/v1/stream-tickets", Some(&f.alice), ""),
    )
    .await;
    let other = made["ticket"].as_str().unwrap();
    let (status, body) = json_of(
        &f.router,
        Call::get(&format!("/api/v1/workflows?ticket={other}"), None),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("GZ4001"))
    );
    // A ticket dies with its key.
    let (key, id) = f.another_key("alice").await;
    let (_, made) = json_of(
        &f.router,
        Call::post("/api/v1/stream-tickets", Some(&key), ""),
    )
    .await;
    admin::revoke_key(f.store.as_ref(), &id).await.unwrap();
    let (status, body) = json_of(
        &f.router,
        Call::get(
            &format!("/api/v1/events?ticket={}", made["ticket"].as_str().unwrap()),
            None,
        ),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("GZ4004"))
    );
    // A key asking in a loop holds at most 16 unused tickets: the oldest lapse.
    let mut many = Vec::new();
    for _ in 0..20 {
        let (_, made) = json_of(
            &f.router,
            Call::post("/api/v1/stream-tickets", Some(&f.bob), ""),
        )
        .await;
        many.push(made["ticket"].as_str().unwrap().to_string());
    }
    for (i, ticket) in many.iter().enumerate() {
        let request = Request::builder()
            .uri(format!("/api/v1/events?ticket={ticket}"))
            .body(Body::empty())
            .unwrap();
        let status = f.router.clone().oneshot(request).await.unwrap().status();
        let expected = if i < 4 {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        };
        assert_eq!(status, expected, "ticket {i}");
    }
    // A key in a URL is refused, even a right one, on every route.
    for uri in [
        "/api/v1/events",
        "/api/v1/ws",
        "/api/v1/workflows",
        "/health",
    ] {
        let (status, body) = json_of(
            &f.router,
            Call::get(&format!("{uri}?api_key={}", f.alice), None),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(body["code"], "GZ4007", "{uri}: {body}");
        assert!(!body.to_string().contains(&f.alice[4..]));
    }
    // The route is documented.
    let (_, doc) = json_of(&f.router, Call::get("/api/v1/openapi.json", None)).await;
    assert!(doc["paths"]["/api/v1/stream-tickets"]["post"].is_object());
}

#[tokio::test]
async fn every_dashboard_file_has_the_pages_content_security_policy() {
    let f = fixture().await;
    let (_, _, index) = send(&f.router, Call::get("/", None)).await;
    let policy = index["content-security-policy"].clone();
    assert!(policy.to_str().unwrap().contains("default-src 'self'"));
    for file in ["app.js", "dag.js", "style.css", "favicon.svg", "missing.js"] {
        let (_, _, headers) = send(&f.router, Call::get(&format!("/dashboard/{file}"), None)).await;
        assert_eq!(
            headers.get("content-security-policy"),
            Some(&policy),
            "{file}"
        );
    }
    // The page's script opens streams with tickets.
    let (_, app, _) = send(&f.router, Call::get("/dashboard/app.js", None)).await;
    assert!(app.contains("/api/v1/stream-tickets") && app.contains("q.set(\"ticket\""));
}
