//! The HTTP surface driven in-process with `tower::ServiceExt::oneshot`, on a
//! memory store with the built-in functions: status codes and bodies of every
//! handler, the error shapes, the OpenAPI document and the SSE stream.

use super::*;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use gleitzeit_providers::function::FunctionProvider;
use gleitzeit_providers::Registry;
use gleitzeit_runtime::RuntimeConfig;
use gleitzeit_store::MemoryStore;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

/// One task: `sum` of 1 and 2, so the result is 3.
const SUM_YAML: &str = "\
name: t
tasks:
  - id: a
    method: function/call
    parameters: {name: sum, args: {numbers: [1, 2]}}
";

fn server_with_limit(max_body_bytes: usize) -> Router {
    let mut registry = Registry::new();
    registry.register(Arc::new(FunctionProvider));
    let runtime = Runtime::new(
        Arc::new(MemoryStore::new()),
        registry,
        RuntimeConfig::default(),
    );
    Server::new(
        runtime,
        ServerConfig {
            max_body_bytes,
            grace: Duration::from_secs(5),
            auth_required: false,
            cluster: None,
            trusted_proxy: None,
            policy: Default::default(),
            ..ServerConfig::default()
        },
    )
    .router()
}

fn server() -> Router {
    server_with_limit(ServerConfig::default().max_body_bytes)
}

/// Sends one request; returns the status, the content type and the body text.
async fn send_raw(
    router: &Router,
    method: Method,
    uri: &str,
    body: impl Into<Body>,
) -> (StatusCode, String, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(body.into())
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .unwrap_or_else(|_| panic!("{uri}: body did not end within 10 s"))
        .expect("body")
        .to_bytes();
    let text = String::from_utf8(bytes.to_vec()).expect("UTF-8 response body");
    (status, content_type, text)
}

/// Sends one request and parses the JSON body.
async fn send(
    router: &Router,
    method: Method,
    uri: &str,
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let (status, content_type, text) = send_raw(router, method, uri, body).await;
    assert!(
        content_type.starts_with("application/json"),
        "{uri}: expected JSON, got `{content_type}`: {text}"
    );
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{uri}: body is not JSON ({e}): {text}"));
    (status, value)
}

async fn get(router: &Router, uri: &str) -> (StatusCode, Value) {
    send(router, Method::GET, uri, Body::empty()).await
}

async fn post(router: &Router, uri: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    send(router, Method::POST, uri, body).await
}

/// Asserts the error shape `{code, message, hint, …}` and returns the body.
fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, code: &str) {
    assert_eq!(status, want_status, "{body:#}");
    assert_eq!(body["code"], code, "{body:#}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body:#}"
    );
    assert!(
        body["hint"].as_str().is_some_and(|h| !h.is_empty()),
        "{body:#}"
    );
    assert!(body["retryable"].is_boolean(), "{body:#}");
}

/// Submits a workflow and returns its id, asserting the 201 answer.
async fn submit(router: &Router, uri: &str, body: &str) -> String {
    let (status, value) = post(router, uri, body.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{value:#}");
    let id = value["workflow_id"]
        .as_str()
        .expect("workflow_id")
        .to_string();
    assert!(id.starts_with("wf_"), "{value:#}");
    assert_eq!(
        value["links"]["workflow"],
        format!("/api/v1/workflows/{id}")
    );
    assert_eq!(
        value["links"]["events"],
        format!("/api/v1/events?workflow_id={id}&after=0")
    );
    id
}

/// Polls the workflow until it is in a terminal state; fails after 10 s.
async fn wait_terminal(router: &Router, id: &str) -> Value {
    for _ in 0..1000 {
        let (status, value) = get(router, &format!("/api/v1/workflows/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{value:#}");
        if matches!(
            value["state"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("workflow {id} did not finish within 10 s");
}

async fn run_to_completion(router: &Router, body: &str) -> (String, Value) {
    let id = submit(router, "/api/v1/workflows", body).await;
    let view = wait_terminal(router, &id).await;
    assert_eq!(view["state"], "completed", "{view:#}");
    (id, view)
}

// ---------------------------------------------------------------- submit

#[tokio::test]
async fn yaml_submit_is_created_and_completes_with_the_result() {
    let router = server();
    let (status, created) = post(&router, "/api/v1/workflows", SUM_YAML).await;
    assert_eq!(status, StatusCode::CREATED, "{created:#}");
    assert_eq!(created["name"], "t");
    assert_eq!(created["state"], "pending");
    assert_eq!(created["total_tasks"], 1);
    let id = created["workflow_id"].as_str().unwrap().to_string();

    let view = wait_terminal(&router, &id).await;
    assert_eq!(view["workflow_id"], id);
    assert_eq!(view["name"], "t");
    assert_eq!(view["state"], "completed", "{view:#}");
    assert!(view["error"].is_null(), "{view:#}");
    assert!(view["started_ms"].is_i64() && view["finished_ms"].is_i64());
    assert_eq!(view["usage"]["llm_calls"], 0);
    let tasks = view["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["id"], "a");
    assert_eq!(tasks[0]["method"], "function/call");
    assert_eq!(tasks[0]["state"], "completed");
    assert_eq!(tasks[0]["attempt"], 1);
    assert_eq!(tasks[0]["result"], 3, "{view:#}");

    // The same task on its own, with the whole result record.
    let (status, task) = get(&router, &format!("/api/v1/workflows/{id}/tasks/a")).await;
    assert_eq!(status, StatusCode::OK, "{task:#}");
    assert_eq!(task["workflow_id"], id);
    assert_eq!(task["id"], "a");
    assert_eq!(task["state"], "completed");
    assert_eq!(task["result"], 3);
    assert_eq!(task["record"]["result"], 3);

    // A unique prefix finds it too.
    let (status, view) = get(&router, &format!("/api/v1/workflows/{}", &id[..10])).await;
    assert_eq!(status, StatusCode::OK, "{view:#}");
    assert_eq!(view["workflow_id"], id);

    // Its stored log, oldest first, ending with workflow_completed.
    let (status, log) = get(&router, &format!("/api/v1/workflows/{id}/events")).await;
    assert_eq!(status, StatusCode::OK, "{log:#}");
    let events = log["events"].as_array().unwrap();
    assert!(events.iter().all(|e| e["workflow_id"] == id.as_str()));
    assert_eq!(events.last().unwrap()["type"], "workflow_completed");
    assert_eq!(log["next_after"], events.last().unwrap()["seq"]);
    let (status, log) = get(
        &router,
        &format!("/api/v1/workflows/{id}/events?types=task_completed"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let kinds: Vec<&Value> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["type"])
        .collect();
    assert_eq!(kinds, [&json!("task_completed")]);
}

#[tokio::test]
async fn json_submit_is_accepted_and_runs() {
    let router = server();
    let body = json!({
        "name": "from-json",
        "tasks": [
            {"id": "fib", "method": "function/call", "parameters": {"name": "fibonacci", "args": {"n": 6}}},
            {"id": "total", "method": "function/call", "dependencies": ["fib"],
             "parameters": {"name": "sum", "args": {"numbers": "${fib}"}}}
        ]
    });
    let (status, created) = post(&router, "/api/v1/workflows", body.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{created:#}");
    assert_eq!(created["name"], "from-json");
    assert_eq!(created["total_tasks"], 2);
    let id = created["workflow_id"].as_str().unwrap();
    let view = wait_terminal(&router, id).await;
    assert_eq!(view["state"], "completed", "{view:#}");
    let result = |task: &str| {
        view["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == task)
            .map(|t| t["result"].clone())
            .unwrap()
    };
    assert_eq!(result("fib"), json!([0, 1, 1, 2, 3, 5]));
    assert_eq!(result("total"), 12);
}

#[tokio::test]
async fn invalid_workflow_is_422_with_every_diagnostic_located() {
    let router = server();
    // An unknown key and a dependency cycle: both are reported.
    let body = "\
name: broken
tasks:
  - id: a
    method: function/call
    dependencies: [b]
    parameters: {name: noop}
    colour: red
  - id: b
    method: function/call
    dependencies: [a]
    parameters: {name: noop}
";
    let (status, error) = post(&router, "/api/v1/workflows", body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error:#}");
    assert!(
        error["code"].as_str().unwrap().starts_with("GZ30"),
        "{error:#}"
    );
    assert!(error["message"]
        .as_str()
        .unwrap()
        .starts_with("workflow is invalid"));
    assert!(!error["hint"].as_str().unwrap().is_empty());
    let diagnostics = error["diagnostics"].as_array().expect("diagnostics");
    assert!(diagnostics.len() >= 2, "{error:#}");
    let codes: Vec<&str> = diagnostics
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"GZ3002"), "unknown key missing: {error:#}");
    assert!(codes.contains(&"GZ3007"), "cycle missing: {error:#}");
    for d in diagnostics {
        assert!(d["line"].as_u64().is_some_and(|l| l >= 1), "{d:#}");
        assert!(d["column"].as_u64().is_some_and(|c| c >= 1), "{d:#}");
        assert!(!d["message"].as_str().unwrap().is_empty(), "{d:#}");
    }
    let unknown = diagnostics.iter().find(|d| d["code"] == "GZ3002").unwrap();
    assert_eq!(unknown["line"], 7, "{unknown:#}");
    assert!(unknown["message"].as_str().unwrap().contains("colour"));
    // Nothing was stored.
    let (_, list) = get(&router, "/api/v1/workflows").await;
    assert_eq!(list["workflows"], json!([]));
}

#[tokio::test]
async fn yaml_syntax_error_is_422_with_a_position() {
    let router = server();
    let (status, error) = post(
        &router,
        "/api/v1/workflows",
        "name: t\ntasks:\n  - id: a\n    method: [unclosed\n",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error:#}");
    assert_eq!(error["code"], "GZ3001", "{error:#}");
    let diagnostics = error["diagnostics"].as_array().unwrap();
    assert!(!diagnostics.is_empty());
    assert!(diagnostics[0]["line"].as_u64().unwrap() >= 1);
    assert!(diagnostics[0]["column"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn non_utf8_body_is_400_gz6006() {
    let router = server();
    let (status, error) = post(
        &router,
        "/api/v1/workflows",
        vec![b'n', b'a', 0xff, 0xfe, b'\n'],
    )
    .await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "GZ6006");
    assert!(error["message"].as_str().unwrap().contains("UTF-8"));
}

#[tokio::test]
async fn body_over_the_limit_is_413_gz6005() {
    let router = server_with_limit(64);
    let body = format!("{SUM_YAML}# {}\n", "x".repeat(200));
    let (status, error) = post(&router, "/api/v1/workflows", body).await;
    assert_error(status, &error, StatusCode::PAYLOAD_TOO_LARGE, "GZ6005");
    assert!(error["message"].as_str().unwrap().contains("64 bytes"));
    // A chunked body (no Content-Length) is cut off at the limit too.
    let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b'#'; 20])));
    let (status, error) = post(
        &router,
        "/api/v1/workflows",
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
    .await;
    assert_error(status, &error, StatusCode::PAYLOAD_TOO_LARGE, "GZ6005");
    // A body within the limit still passes the limit (and then validates).
    let (status, error) = post(&router, "/api/v1/workflows", "name: t\n").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error:#}");
}

#[tokio::test]
async fn input_query_overrides_a_workflow_input() {
    let router = server();
    let body = "\
name: greet
inputs: {word: default, n: 3}
tasks:
  - id: say
    method: function/call
    parameters: {name: echo, args: {value: \"${inputs.word}\"}}
  - id: fib
    method: function/call
    parameters: {name: fibonacci, args: {n: \"${inputs.n}\"}}
";
    let (_, view) = run_to_completion(&router, body).await;
    let result = |view: &Value, task: &str| {
        view["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == task)
            .map(|t| t["result"].clone())
            .unwrap()
    };
    assert_eq!(result(&view, "say"), "default");
    assert_eq!(result(&view, "fib"), json!([0, 1, 1]));

    // Values are JSON when they parse as JSON, text otherwise; URL-encoded.
    let id = submit(
        &router,
        "/api/v1/workflows?input=word%3Dhello%20there&input=n=5",
        body,
    )
    .await;
    let view = wait_terminal(&router, &id).await;
    assert_eq!(view["state"], "completed", "{view:#}");
    assert_eq!(result(&view, "say"), "hello there");
    assert_eq!(result(&view, "fib"), json!([0, 1, 1, 2, 3]));

    // An override without `=` is a bad input.
    let (status, error) = post(&router, "/api/v1/workflows?input=word", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error:#}");
    assert!(
        error["code"].as_str().unwrap().starts_with("GZ"),
        "{error:#}"
    );
}

#[tokio::test]
async fn unknown_query_parameter_on_submit_is_400() {
    let router = server();
    let (status, error) = post(&router, "/api/v1/workflows?dry_run=1", SUM_YAML).await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "GZ6006");
    assert!(error["message"].as_str().unwrap().contains("dry_run"));
    let (_, list) = get(&router, "/api/v1/workflows").await;
    assert_eq!(list["workflows"], json!([]));
}

// ------------------------------------------------------------- not found

#[tokio::test]
async fn unknown_workflow_is_404_gz3021() {
    let router = server();
    for uri in [
        "/api/v1/workflows/wf_doesnotexist",
        "/api/v1/workflows/wf_doesnotexist/tasks/a",
        "/api/v1/workflows/wf_doesnotexist/events",
    ] {
        let (status, error) = get(&router, uri).await;
        assert_error(status, &error, StatusCode::NOT_FOUND, "GZ3021");
    }
    for action in ["cancel", "resume"] {
        let (status, error) = post(
            &router,
            &format!("/api/v1/workflows/wf_doesnotexist/{action}"),
            Body::empty(),
        )
        .await;
        assert_error(status, &error, StatusCode::NOT_FOUND, "GZ3021");
    }
}

#[tokio::test]
async fn unknown_task_is_404_gz3023() {
    let router = server();
    let (id, _) = run_to_completion(&router, SUM_YAML).await;
    let (status, error) = get(&router, &format!("/api/v1/workflows/{id}/tasks/nope")).await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "GZ3023");
    assert!(error["message"].as_str().unwrap().contains("nope"));
}

#[tokio::test]
async fn unknown_route_is_404_gz6007() {
    let router = server();
    for uri in ["/api/v1/nothing", "/api/v2/workflows", "/nothing-here"] {
        let (status, error) = get(&router, uri).await;
        assert_error(status, &error, StatusCode::NOT_FOUND, "GZ6007");
    }
}

#[tokio::test]
async fn the_dashboard_is_served_at_the_root_with_types_and_revalidation() {
    let router = server();
    let (status, content_type, html) = send_raw(&router, Method::GET, "/", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert!(html.contains("/dashboard/app.js"), "{html}");
    for (file, kind) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("dag.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let request = Request::builder()
            .uri(format!("/dashboard/{file}"))
            .body(Body::empty())
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{file}");
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], kind, "{file}");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{file}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let etag = headers[header::ETAG].to_str().unwrap().to_string();
        // The browser's revalidation: unchanged files cost no body.
        let again = Request::builder()
            .uri(format!("/dashboard/{file}"))
            .header(header::IF_NONE_MATCH, &etag)
            .body(Body::empty())
            .unwrap();
        let response = router.clone().oneshot(again).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{file}");
    }
    let (status, error) = get(&router, "/dashboard/secrets.txt").await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "GZ6007");
}

#[tokio::test]
async fn a_task_shows_its_parameters_dependencies_and_retry_policy() {
    let router = server();
    let yaml = "\
name: t
tasks:
  - id: a
    method: function/call
    parameters: {name: sum, args: {numbers: [1, 2]}}
  - id: b
    method: function/call
    dependencies: [a]
    retry: {max_attempts: 4}
    timeout: 7
    parameters: {name: sum, args: {numbers: ['${a}', 10]}}
";
    let (id, _) = run_to_completion(&router, yaml).await;
    let (status, task) = get(&router, &format!("/api/v1/workflows/{id}/tasks/b")).await;
    assert_eq!(status, StatusCode::OK, "{task:#}");
    assert_eq!(task["result"], 13);
    assert_eq!(task["dependencies"], json!(["a"]));
    assert_eq!(
        task["parameters"],
        json!({"name": "sum", "args": {"numbers": ["${a}", 10]}}),
        "parameters as written, references unresolved"
    );
    assert_eq!(task["retry"]["max_attempts"], 4);
    assert_eq!(task["timeout"], 7.0);
}

#[tokio::test]
async fn wrong_method_is_405_with_a_json_error() {
    let router = server();
    let (status, error) = send(&router, Method::DELETE, "/api/v1/workflows", Body::empty()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{error:#}");
    assert_eq!(error["code"], "GZ6006");
}

// ------------------------------------------------------------------ list

#[tokio::test]
async fn list_filters_by_state_and_pages() {
    let router = server();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(run_to_completion(&router, SUM_YAML).await.0);
    }
    let failing = "\
name: bad
tasks:
  - id: a
    method: function/call
    retry: 1
    parameters: {name: fibonacci, args: {n: -1}}
";
    let failed_id = submit(&router, "/api/v1/workflows", failing).await;
    let view = wait_terminal(&router, &failed_id).await;
    assert_eq!(view["state"], "failed", "{view:#}");
    assert!(view["error"]["code"].as_str().unwrap().starts_with("GZ"));

    let (status, list) = get(&router, "/api/v1/workflows").await;
    assert_eq!(status, StatusCode::OK, "{list:#}");
    assert_eq!(list["limit"], 20);
    assert_eq!(list["offset"], 0);
    assert_eq!(list["workflows"].as_array().unwrap().len(), 4);

    let (status, list) = get(&router, "/api/v1/workflows?state=completed").await;
    assert_eq!(status, StatusCode::OK);
    let completed = list["workflows"].as_array().unwrap();
    assert_eq!(completed.len(), 3, "{list:#}");
    assert!(completed.iter().all(|w| w["state"] == "completed"));
    let mut listed: Vec<&str> = completed
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    listed.sort_unstable();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(listed, want);
    assert!(completed
        .iter()
        .all(|w| w["total"] == 1 && w["completed"] == 1 && w["failed"] == 0));

    let (_, list) = get(&router, "/api/v1/workflows?state=FAILED").await;
    let failed = list["workflows"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{list:#}");
    assert_eq!(failed[0]["id"], failed_id);
    assert_eq!(failed[0]["failed"], 1);

    // Pages of two over the four workflows: 2 + 2 + 0, no overlap.
    let mut seen = Vec::new();
    for (offset, want) in [(0, 2), (2, 2), (4, 0)] {
        let (status, list) = get(
            &router,
            &format!("/api/v1/workflows?limit=2&offset={offset}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["limit"], 2);
        assert_eq!(list["offset"], offset);
        let page = list["workflows"].as_array().unwrap();
        assert_eq!(page.len(), want, "offset {offset}: {list:#}");
        seen.extend(page.iter().map(|w| w["id"].as_str().unwrap().to_string()));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4);

    let (_, list) = get(
        &router,
        "/api/v1/workflows?state=completed&limit=1&offset=1",
    )
    .await;
    assert_eq!(list["workflows"].as_array().unwrap().len(), 1);
    assert_eq!(list["workflows"][0]["state"], "completed");

    // Limits are clamped to 1..=1000.
    let (_, list) = get(&router, "/api/v1/workflows?limit=0").await;
    assert_eq!(list["limit"], 1);
    let (_, list) = get(&router, "/api/v1/workflows?limit=5000").await;
    assert_eq!(list["limit"], 1000);
}

#[tokio::test]
async fn list_with_a_bad_state_or_number_is_400() {
    let router = server();
    let (status, error) = get(&router, "/api/v1/workflows?state=sleeping").await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "GZ9001");
    assert!(error["message"].as_str().unwrap().contains("sleeping"));
    let (status, error) = get(&router, "/api/v1/workflows?limit=many").await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "GZ6006");
    let (status, error) = get(&router, "/api/v1/workflows?offset=-1").await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "GZ6006");
}

// -------------------------------------------------------- cancel / resume

#[tokio::test]
async fn cancel_of_a_finished_workflow_returns_its_state() {
    let router = server();
    let (id, _) = run_to_completion(&router, SUM_YAML).await;
    let (status, answer) = post(
        &router,
        &format!("/api/v1/workflows/{id}/cancel"),
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer:#}");
    assert_eq!(answer["workflow_id"], id);
    assert_eq!(answer["state"], "completed");
    assert_eq!(answer["cancel_requested"], false);
    assert_eq!(answer["was_terminal"], true, "{answer:#}");
    // And it stays completed.
    let view = wait_terminal(&router, &id).await;
    assert_eq!(view["state"], "completed");
}

#[tokio::test]
async fn cancel_of_a_running_workflow_cancels_it() {
    let router = server();
    let body = "\
name: slow
tasks:
  - id: nap
    method: function/call
    parameters: {name: sleep_ms, args: {ms: 3000}}
";
    let id = submit(&router, "/api/v1/workflows", body).await;
    // Wait until the task runs.
    for i in 0.. {
        let (_, task) = get(&router, &format!("/api/v1/workflows/{id}/tasks/nap")).await;
        if task["state"] == "running" {
            break;
        }
        assert!(i < 500, "task never started: {task:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let asked = std::time::Instant::now();
    let (status, answer) = post(
        &router,
        &format!("/api/v1/workflows/{id}/cancel"),
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer:#}");
    assert_eq!(answer["workflow_id"], id);
    // The answer does not wait for the (blocking, uncancellable) sleep.
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "cancel took {:?}",
        asked.elapsed()
    );
    assert_eq!(answer["state"], "cancelled", "{answer:#}");
    assert_eq!(answer["was_terminal"], false, "{answer:#}");
    let view = wait_terminal(&router, &id).await;
    assert_eq!(view["state"], "cancelled");
}

#[tokio::test]
async fn resume_of_a_completed_workflow_is_409_gz3022() {
    let router = server();
    let (id, _) = run_to_completion(&router, SUM_YAML).await;
    let (status, error) = post(
        &router,
        &format!("/api/v1/workflows/{id}/resume"),
        Body::empty(),
    )
    .await;
    assert_error(status, &error, StatusCode::CONFLICT, "GZ3022");
    assert!(error["message"].as_str().unwrap().contains("completed"));
}

// ---------------------------------------------------------------- system

#[tokio::test]
async fn error_registry_entries_and_unknown_codes() {
    let router = server();
    let (status, def) = get(&router, "/api/v1/errors/GZ3021").await;
    assert_eq!(status, StatusCode::OK, "{def:#}");
    assert_eq!(def["code"], "GZ3021");
    assert_eq!(def["name"], "WorkflowNotFound");
    assert_eq!(def["domain"], "workflow");
    assert!(!def["message"].as_str().unwrap().is_empty());
    assert!(!def["hint"].as_str().unwrap().is_empty());
    // Lower case works as on the command line.
    let (status, def) = get(&router, "/api/v1/errors/gz3021").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(def["code"], "GZ3021");

    for code in ["GZ0000", "nonsense"] {
        let (status, error) = get(&router, &format!("/api/v1/errors/{code}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{error:#}");
        assert!(error["message"].as_str().unwrap().contains(code));
        assert!(!error["hint"].as_str().unwrap().is_empty());
    }

    let (status, list) = get(&router, "/api/v1/errors").await;
    assert_eq!(status, StatusCode::OK);
    let codes: Vec<&str> = list["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    for code in ["GZ3021", "GZ3022", "GZ3023", "GZ6005", "GZ6006", "GZ6007"] {
        assert!(codes.contains(&code), "{code} missing from the registry");
    }
}

#[tokio::test]
async fn functions_are_listed_and_shown() {
    let router = server();
    let (status, list) = get(&router, "/api/v1/functions").await;
    assert_eq!(status, StatusCode::OK);
    let functions = list["functions"].as_array().unwrap();
    assert_eq!(functions.len(), gleitzeit_functions::all().len());
    let names: Vec<&str> = functions
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for name in ["sum", "fibonacci", "noop", "echo"] {
        assert!(names.contains(&name), "{name} missing: {names:?}");
    }

    let (status, function) = get(&router, "/api/v1/functions/fibonacci").await;
    assert_eq!(status, StatusCode::OK, "{function:#}");
    assert_eq!(function["name"], "fibonacci");
    assert_eq!(function["category"], "math");
    assert!(function["args"].is_array());

    let (status, error) = get(&router, "/api/v1/functions/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error:#}");
    assert!(error["message"].as_str().unwrap().contains("nope"));
}

#[tokio::test]
async fn providers_health_and_stats() {
    let router = server();
    run_to_completion(&router, SUM_YAML).await;

    let (status, providers) = get(&router, "/api/v1/providers?check=true").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(providers["providers"][0]["protocol"], "function");
    assert_eq!(
        providers["providers"][0]["methods"][0]["method"],
        "function/call"
    );
    assert!(providers["providers"][0]["health"]["status"].is_string());

    for uri in ["/api/v1/health", "/health"] {
        let (status, health) = get(&router, uri).await;
        assert_eq!(status, StatusCode::OK, "{health:#}");
        assert_eq!(health["status"], "healthy", "{health:#}");
        assert_eq!(health["reasons"], json!([]));
        assert_eq!(health["store"]["ok"], true);
        assert_eq!(health["store"]["workflows_by_state"]["completed"], 1);
    }

    // In-process execution: no worker nodes, and health does not mention them.
    let (status, nodes) = get(&router, "/api/v1/nodes").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(nodes, json!({"scale_out": false, "nodes": []}));
    let (_, health) = get(&router, "/api/v1/health").await;
    assert!(health.get("nodes").is_none(), "{health:#}");

    let (status, stats) = get(&router, "/api/v1/stats").await;
    assert_eq!(status, StatusCode::OK, "{stats:#}");
    assert_eq!(stats["workflows_by_state"]["completed"], 1);
    assert_eq!(stats["window"]["tasks_finished"], 1);
    assert_eq!(stats["window"]["methods"]["function/call"]["count"], 1);
    let (status, error) = get(&router, "/api/v1/stats?range_minutes=soon").await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "GZ6006");
}

#[tokio::test]
async fn metrics_show_workflows_and_task_durations_after_a_run() {
    let router = server();
    run_to_completion(&router, SUM_YAML).await;
    // Durations are observed from the event stream, a moment after the store.
    let mut text = String::new();
    for _ in 0..200 {
        let (status, content_type, body) =
            send_raw(&router, Method::GET, "/metrics", Body::empty()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("application/openmetrics-text"));
        text = body;
        if text.contains("gleitzeit_task_duration_seconds_count") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        text.contains("gleitzeit_workflows{state=\"completed\"} 1"),
        "{text}"
    );
    assert!(text.contains("gleitzeit_task_duration_seconds"), "{text}");
    assert!(
        text.contains(
            "gleitzeit_task_duration_seconds_count{method=\"function/call\",outcome=\"completed\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("gleitzeit_tasks{state=\"completed\"} 1"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
}

#[tokio::test]
async fn openapi_documents_every_route_the_router_serves() {
    let router = server();
    let (status, doc) = get(&router, "/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["info"]["title"], "Gleitzeit API");
    let paths = doc["paths"].as_object().expect("paths");
    let served = [
        ("/api/v1/workflows", &["get", "post"][..]),
        ("/api/v1/workflows/{id}", &["get"]),
        ("/api/v1/workflows/{id}/cancel", &["post"]),
        ("/api/v1/workflows/{id}/resume", &["post"]),
        ("/api/v1/workflows/{id}/tasks/{task_id}", &["get"]),
        ("/api/v1/workflows/{id}/events", &["get"]),
        ("/api/v1/events", &["get"]),
        ("/api/v1/events/head", &["get"]),
        ("/api/v1/ws", &["get"]),
        ("/api/v1/stream-tickets", &["post"]),
        ("/api/v1/stats", &["get"]),
        ("/api/v1/providers", &["get"]),
        ("/api/v1/nodes", &["get"]),
        ("/api/v1/functions", &["get"]),
        ("/api/v1/functions/{name}", &["get"]),
        ("/api/v1/errors", &["get"]),
        ("/api/v1/errors/{code}", &["get"]),
        ("/api/v1/health", &["get"]),
        ("/metrics", &["get"]),
        ("/api/v1/auth/whoami", &["get"]),
        ("/api/v1/auth/users", &["get", "post"]),
        ("/api/v1/auth/users/{name}/disable", &["post"]),
        ("/api/v1/auth/keys", &["get", "post"]),
        ("/api/v1/auth/keys/{id}/revoke", &["post"]),
        ("/api/v1/auth/audit", &["get"]),
        ("/api/v1/schedules", &["get", "post"]),
        ("/api/v1/schedules/{id}", &["get", "delete"]),
        ("/api/v1/schedules/{id}/pause", &["post"]),
        ("/api/v1/schedules/{id}/resume", &["post"]),
        ("/api/v1/schedules/{id}/run-now", &["post"]),
        ("/api/v1/schedules/{id}/backfill", &["post"]),
        ("/api/v1/hooks/{name}", &["post"]),
    ];
    for (path, methods) in served {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not documented"));
        for method in methods {
            assert!(
                item.get(*method).is_some(),
                "{method} {path} not documented"
            );
        }
    }
    assert_eq!(
        paths.len(),
        served.len(),
        "documented paths: {:?}",
        paths.keys()
    );

    // And every documented GET is really served (no 404 from the fallback).
    for (path, item) in paths {
        if item.get("get").is_none() || path == "/api/v1/events" || path == "/api/v1/ws" {
            continue;
        }
        let uri = path
            .replace("{id}", "wf_none")
            .replace("{task_id}", "a")
            .replace("{name}", "sum")
            .replace("{code}", "GZ3021");
        let (status, _, body) = send_raw(&router, Method::GET, &uri, Body::empty()).await;
        let not_served = status == StatusCode::NOT_FOUND
            && serde_json::from_str::<Value>(&body).is_ok_and(|v| v["code"] == "GZ6007");
        assert!(
            !not_served,
            "{uri} documented but not served: {status} {body}"
        );
    }
}

#[tokio::test]
async fn event_stream_rejects_unknown_types_and_bad_resume_ids() {
    let router = server();
    let (status, error) = get(&router, "/api/v1/events?types=nonsense").await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "GZ9001");
    assert!(error["message"].as_str().unwrap().contains("nonsense"));

    let request = Request::builder()
        .uri("/api/v1/events")
        .header("last-event-id", "yesterday")
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["code"], "GZ6006");
}

// ------------------------------------------------------------------- SSE

#[derive(Debug)]
struct SseMessage {
    id: u64,
    kind: String,
    data: Value,
}

/// Splits complete messages off the front of `buffer` (keep-alive comments
/// and partial messages stay behind or are skipped).
fn take_messages(buffer: &mut String) -> Vec<SseMessage> {
    let mut messages = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let (mut id, mut kind, mut data) = (None, None, String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().parse::<u64>().expect("numeric id"));
            } else if let Some(v) = line.strip_prefix("event:") {
                kind = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if let (Some(id), Some(kind)) = (id, kind) {
            let data = serde_json::from_str(&data).expect("data is JSON");
            messages.push(SseMessage { id, kind, data });
        }
    }
    messages
}

#[tokio::test]
async fn sse_replays_history_then_live_events_in_order_without_duplicates() {
    let router = server();
    // One workflow finished before the client connects (history) …
    let (first, _) = run_to_completion(&router, SUM_YAML).await;

    let request = Request::builder()
        .uri("/api/v1/events?after=0")
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = response.into_body();

    // … and two more run while it reads (live).
    let fan = "\
name: fan
tasks:
  - {id: start, method: function/call, parameters: {name: noop}}
  - {id: a, method: function/call, dependencies: [start], parameters: {name: noop}}
  - {id: b, method: function/call, dependencies: [start], parameters: {name: noop}}
  - {id: c, method: function/call, dependencies: [start], parameters: {name: noop}}
  - {id: join, method: function/call, dependencies: [a, b, c], parameters: {name: noop}}
";
    let second = submit(&router, "/api/v1/workflows", fan).await;
    let third = submit(&router, "/api/v1/workflows", SUM_YAML).await;

    let mut buffer = String::new();
    let mut messages: Vec<SseMessage> = Vec::new();
    let mut completed = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while completed.len() < 3 {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} workflow_completed after 10 s; got {:?}",
                    completed.len(),
                    messages.iter().map(|m| (m.id, &m.kind)).collect::<Vec<_>>()
                )
            })
            .expect("stream ended early")
            .expect("body error");
        if let Ok(data) = frame.into_data() {
            buffer.push_str(std::str::from_utf8(&data).expect("UTF-8 stream"));
        }
        for message in take_messages(&mut buffer) {
            if message.kind == "workflow_completed" {
                completed.push(message.data["workflow_id"].as_str().unwrap().to_string());
            }
            messages.push(message);
        }
    }
    drop(body);

    // Each workflow completes once (in whatever order they finish).
    completed.sort();
    let mut want = vec![first.clone(), second.clone(), third.clone()];
    want.sort();
    assert_eq!(completed, want);
    for pair in messages.windows(2) {
        assert!(
            pair[0].id < pair[1].id,
            "ids not strictly increasing: {} then {}",
            pair[0].id,
            pair[1].id
        );
    }
    for message in &messages {
        assert_eq!(message.data["seq"], message.id, "{message:?}");
        assert_eq!(message.data["type"], message.kind.as_str(), "{message:?}");
        assert!(message.data["at_ms"].is_i64(), "{message:?}");
    }
    // Everything of the three workflows is there: 1 + 5 + 1 task completions.
    let task_completions = messages
        .iter()
        .filter(|m| m.kind == "task_completed")
        .count();
    assert_eq!(task_completions, 7);
    let mut started: Vec<&str> = messages
        .iter()
        .filter(|m| m.kind == "workflow_started")
        .map(|m| m.data["workflow_id"].as_str().unwrap())
        .collect();
    started.sort_unstable();
    assert_eq!(started, want.iter().map(String::as_str).collect::<Vec<_>>());
    // The stored log agrees: the stream starts at the first event.
    assert_eq!(messages[0].id, 1);
}

#[tokio::test]
async fn sse_resumes_after_last_event_id_and_filters() {
    let router = server();
    let (id, _) = run_to_completion(&router, SUM_YAML).await;
    let (_, log) = get(&router, &format!("/api/v1/workflows/{id}/events")).await;
    let seqs: Vec<u64> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.len() >= 3, "{log:#}");
    let resume_after = seqs[1];

    let request = Request::builder()
        .uri(format!(
            "/api/v1/events?workflow_id={id}&types=task_completed,workflow_completed&after=0"
        ))
        .header("last-event-id", resume_after.to_string())
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut buffer = String::new();
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !messages
        .iter()
        .any(|m: &SseMessage| m.kind == "workflow_completed")
    {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("workflow_completed within 10 s")
            .expect("stream open")
            .expect("body error");
        if let Ok(data) = frame.into_data() {
            buffer.push_str(std::str::from_utf8(&data).unwrap());
        }
        messages.extend(take_messages(&mut buffer));
    }
    // The header wins over `after=0`; only the asked-for types come.
    assert!(messages.iter().all(|m| m.id > resume_after));
    let kinds: Vec<&str> = messages.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(kinds, ["task_completed", "workflow_completed"]);
}

/// axum's own extractor rejections (a `Path` segment that is not UTF-8 after
/// decoding, a plain GET on the WebSocket route) leave as the same
/// `{code, message, hint}` JSON as every other failure.
#[tokio::test]
async fn extractor_rejections_are_json_errors() {
    let router = server();
    for uri in [
        "/api/v1/workflows/%FF",
        "/api/v1/workflows/%FF/tasks/a",
        "/api/v1/functions/%C3%28",
        "/api/v1/ws",
    ] {
        let (status, error) = get(&router, uri).await;
        assert_error(status, &error, StatusCode::BAD_REQUEST, "GZ6006");
    }
}

/// A subscriber that does not read while more events happen than the live
/// buffer holds: the runtime does not wait for it, and when it reads again it
/// gets every event, in order, from the store.
#[tokio::test]
async fn a_stream_that_falls_behind_the_live_buffer_loses_nothing() {
    use futures_util::StreamExt;
    let mut registry = Registry::new();
    registry.register(Arc::new(FunctionProvider));
    let runtime = Runtime::new(
        Arc::new(MemoryStore::new()),
        registry,
        RuntimeConfig::default(),
    );
    let server = Server::new(runtime.clone(), ServerConfig::default());
    let events = crate::stream::events(server.state.clone(), Default::default(), None);
    let mut events = std::pin::pin!(events);
    // Poll once so the stream subscribes and fixes its starting point.
    let first = tokio::time::timeout(Duration::from_millis(50), events.next()).await;
    assert!(first.is_err(), "nothing has happened yet");

    // 3,000 tasks: well over the 8,192-event live buffer.
    let mut yaml = String::from("name: many\ntasks:\n");
    for i in 0..3000 {
        yaml.push_str(&format!(
            "  - {{id: t{i}, method: function/call, parameters: {{name: sum, args: {{numbers: [{i}, 1]}}}}}}\n"
        ));
    }
    let workflow =
        gleitzeit_core::parse::load(&yaml, "many", runtime.registry(), &Default::default())
            .unwrap();
    let id = runtime.submit(workflow, None).await.unwrap();
    let outcome = runtime
        .run(&id, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(outcome.state, gleitzeit_core::WorkflowState::Completed);
    let stored = runtime.store().latest_event_seq().await.unwrap();
    assert!(
        stored > 8192,
        "the test needs more events than the buffer: {stored}"
    );

    let mut seen = Vec::new();
    while seen.last() != Some(&stored) {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("stream stalled")
            .expect("stream ended")
            .unwrap();
        seen.push(event.seq);
    }
    assert_eq!(seen, (1..=stored).collect::<Vec<_>>());
}

/// What clients call before every command: cheap, and still a verdict.
#[tokio::test]
async fn quick_health_skips_providers_and_events_head_tracks_the_log() {
    let router = server();
    let (status, full) = get(&router, "/api/v1/health").await;
    assert_eq!(status, StatusCode::OK);
    assert!(full["providers"]["function"].is_object(), "{full}");
    let (status, quick) = get(&router, "/api/v1/health?quick=true").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(quick["providers"], json!({}), "{quick}");
    assert_eq!(quick["status"], "healthy");

    let (_, head) = get(&router, "/api/v1/events/head").await;
    assert_eq!(head["latest_event_seq"], 0);
    let (id, _) = run_to_completion(&router, SUM_YAML).await;
    let (_, head) = get(&router, "/api/v1/events/head").await;
    let (_, log) = get(&router, &format!("/api/v1/workflows/{id}/events")).await;
    assert_eq!(head["latest_event_seq"], log["next_after"]);
    assert!(head["latest_event_seq"].as_u64().unwrap() > 0);
}

const HOOK_YAML: &str = "\
name: hooked
inputs: {ticket: none}
triggers:
  - webhook: {name: new-ticket}
tasks:
  - id: a
    method: function/call
    parameters: {name: sum, args: {numbers: [1, 2]}}
";

fn hook_server(calls_per_minute: u32) -> (Router, Arc<dyn gleitzeit_store::Store>) {
    let mut registry = Registry::new();
    registry.register(Arc::new(FunctionProvider));
    let store: Arc<dyn gleitzeit_store::Store> = Arc::new(MemoryStore::new());
    let runtime = Runtime::new(store.clone(), registry, RuntimeConfig::default());
    let router = Server::new(
        runtime,
        ServerConfig {
            hook_calls_per_minute: calls_per_minute,
            ..ServerConfig::default()
        },
    )
    .router();
    (router, store)
}

async fn hook_call(router: &Router, content_type: &str, body: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/hooks/new-ticket")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_string()))
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn schedules_are_registered_listed_paused_and_removed() {
    let (router, _) = hook_server(60);
    let (status, added) = post(
        &router,
        "/api/v1/schedules?every=30s&overlap=skip",
        SUM_YAML,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{added:#}");
    let id = added["schedules"][0]["schedule_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(added["schedules"][0]["describe"], "every 30s");
    assert!(added["schedules"][0]["next_fire"].is_string());

    let (status, list) = get(&router, "/api/v1/schedules").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1);
    let (_, paused) = post(
        &router,
        &format!("/api/v1/schedules/{}/pause", &id[..8]),
        Body::empty(),
    )
    .await;
    assert_eq!(paused["paused"], true, "{paused:#}");
    let (_, resumed) = post(
        &router,
        &format!("/api/v1/schedules/{id}/resume"),
        Body::empty(),
    )
    .await;
    assert_eq!(resumed["paused"], false);

    let (status, started) = post(
        &router,
        &format!("/api/v1/schedules/{id}/run-now"),
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started:#}");
    let run = started["workflow_id"].as_str().unwrap().to_string();
    let (_, runs) = get(&router, &format!("/api/v1/workflows?schedule={}", &id[..8])).await;
    assert_eq!(runs["workflows"][0]["id"], run.as_str());
    let (_, view) = get(&router, &format!("/api/v1/workflows/{run}")).await;
    assert_eq!(view["trigger"]["kind"], "run_now");
    assert_eq!(view["trigger"]["id"], id.as_str());

    let (status, body) = send(
        &router,
        Method::DELETE,
        &format!("/api/v1/schedules/{id}"),
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["schedule_id"], id.as_str());
    let (status, body) = get(&router, &format!("/api/v1/schedules/{id}")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "GZ3064");
}

#[tokio::test]
async fn bad_schedules_are_refused_with_their_codes() {
    let (router, _) = hook_server(60);
    let (status, body) = post(
        &router,
        "/api/v1/schedules?cron=61%20*%20*%20*%20*",
        SUM_YAML,
    )
    .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "GZ3061");
    let (status, body) = post(
        &router,
        "/api/v1/schedules?cron=%40daily&tz=Europe%2FBerln",
        SUM_YAML,
    )
    .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "GZ3062");
    assert!(
        body["hint"].as_str().unwrap().contains("Europe/Berlin"),
        "{body:#}"
    );
    let (status, body) = post(&router, "/api/v1/schedules?every=200ms", SUM_YAML).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "GZ3063");
    let (status, body) = post(&router, "/api/v1/schedules", SUM_YAML).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "GZ3060");
    let bad_file = SUM_YAML.replace("tasks:", "triggers:\n  - cron: \"0 25 * * *\"\ntasks:");
    let (status, body) = post(&router, "/api/v1/schedules", bad_file).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "GZ3061");
    assert_eq!(body["diagnostics"][0]["line"], 3, "{body:#}");
    assert_eq!(body["diagnostics"][0]["column"], 14, "{body:#}");
    let (status, body) = post(
        &router,
        "/api/v1/schedules/sch_nope/backfill",
        "{\"from\": \"2026-01-01\", \"to\": \"2026-01-02\"}",
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "GZ3064");
}

#[tokio::test]
async fn webhook_bodies_become_inputs_and_bad_bodies_are_refused() {
    let (router, store) = hook_server(20);
    let (status, added) = post(&router, "/api/v1/schedules", HOOK_YAML).await;
    assert_eq!(status, StatusCode::CREATED, "{added:#}");
    assert_eq!(added["hook_secrets"][0]["hook"], "new-ticket");

    let (status, started) = hook_call(&router, "application/json", "{\"ticket\": \"T-1\"}").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started:#}");
    let run = store
        .workflow(started["workflow_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.spec.inputs["ticket"], "T-1");
    assert_eq!(run.spec.trigger.unwrap().kind, "webhook");
    let (status, _) = hook_call(&router, "application/x-www-form-urlencoded", "ticket=T-2").await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let (status, body) = hook_call(&router, "application/json", "[1, 2]").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "GZ3066");
    let (status, body) = hook_call(&router, "application/json", "{not json").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "GZ3066");
    let (status, body) = hook_call(&router, "application/json", "{\"tikcet\": 1}").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "GZ3066");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("accepted: ticket"),
        "{body:#}"
    );
    let (status, body) = hook_call(&router, "text/plain", "hello").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "GZ3066");
    let big = format!("{{\"ticket\": \"{}\"}}", "x".repeat(300 * 1024));
    let (status, body) = hook_call(&router, "application/json", &big).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "GZ6005");
}

#[tokio::test]
async fn webhooks_are_rate_limited_per_hook() {
    let (router, _) = hook_server(2);
    post(&router, "/api/v1/schedules", HOOK_YAML).await;
    for _ in 0..2 {
        let (status, _) = hook_call(&router, "application/json", "{}").await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/hooks/new-ticket")
        .body(Body::empty())
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().get("retry-after").is_some());
    let (status, body) = post(&router, "/api/v1/hooks/other", Body::empty()).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "GZ3065");
}
