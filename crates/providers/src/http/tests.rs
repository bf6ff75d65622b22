use super::*;
use axum::http::StatusCode;
use axum::response::Redirect;
use axum::routing::{get, post};
use axum::{Json, Router};

/// A local server with routes for each case; returns its base URL.
async fn serve() -> String {
    let app = Router::new()
        .route("/json", get(|| async { Json(json!({"ok": true, "n": 3})) }))
        .route("/text", get(|| async { "plain words" }))
        .route(
            "/echo",
            post(|headers: axum::http::HeaderMap, body: String| async move {
                Json(json!({"body": body, "content_type": headers.get("content-type").and_then(|v| v.to_str().ok()), "x": headers.get("x-test").and_then(|v| v.to_str().ok())}))
            }),
        )
        .route(
            "/query",
            get(|axum::extract::RawQuery(q): axum::extract::RawQuery| async move { q.unwrap_or_default() }),
        )
        .route("/missing", get(|| async { (StatusCode::NOT_FOUND, "no such thing") }))
        .route("/boom", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }))
        .route("/slow", get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }))
        .route("/big", get(|| async { "x".repeat(4096) }))
        .route("/to-json", get(|| async { Redirect::temporary("/json") }))
        .route("/to-metadata", get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data/") }))
        .route("/to-private", get(|| async { Redirect::temporary("http://10.0.0.1/admin") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// The guard opens 127.0.0.1 (where the test server is) and nothing else.
fn provider() -> HttpProvider {
    HttpProvider::new(HttpConfig {
        allow_hosts: vec!["127.0.0.1".into()],
        max_response_bytes: 1024,
        ..HttpConfig::default()
    })
    .unwrap()
}

async fn call(p: &HttpProvider, params: Value) -> Result<Value, GzError> {
    p.call("http/request", params, &CallContext::detached("t"))
        .await
}

#[tokio::test]
async fn json_and_text_bodies_query_headers_and_post() {
    let base = serve().await;
    let p = provider();
    let r = call(&p, json!({"url": format!("{base}/json")}))
        .await
        .unwrap();
    assert_eq!(r["status"], 200);
    assert_eq!(r["result"], json!({"ok": true, "n": 3}));
    assert_eq!(r["json"]["n"], 3);
    assert!(r["headers"]["content-type"]
        .as_str()
        .unwrap()
        .contains("json"));

    let r = call(&p, json!({"url": format!("{base}/text")}))
        .await
        .unwrap();
    assert_eq!(r["result"], "plain words");
    assert_eq!(r["text"], "plain words");

    let r = call(
        &p,
        json!({"url": format!("{base}/query"), "query": {"a": "x y", "n": 2}}),
    )
    .await
    .unwrap();
    assert_eq!(r["result"], "a=x+y&n=2");

    let r = call(
        &p,
        json!({"method": "post", "url": format!("{base}/echo"), "json": {"k": [1, 2]}, "headers": {"X-Test": "yes"}}),
    )
    .await
    .unwrap();
    assert_eq!(r["json"]["body"], r#"{"k":[1,2]}"#);
    assert_eq!(r["json"]["content_type"], "application/json");
    assert_eq!(r["json"]["x"], "yes");

    // Redirects within allowed space are followed.
    let r = call(&p, json!({"url": format!("{base}/to-json")}))
        .await
        .unwrap();
    assert_eq!(r["json"]["ok"], true);
    assert!(r["url"].as_str().unwrap().ends_with("/json"));
}

#[tokio::test]
async fn statuses_timeouts_and_sizes_are_gz_errors() {
    let base = serve().await;
    let p = provider();
    let e = call(&p, json!({"url": format!("{base}/missing")}))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::HttpRequestFailed);
    assert!(
        e.message.contains("404") && e.message.contains("no such thing"),
        "{e}"
    );
    assert!(!e.retryable, "a 404 will not change");
    let e = call(&p, json!({"url": format!("{base}/boom")}))
        .await
        .unwrap_err();
    assert!(e.retryable, "a 503 may pass");
    let r = call(
        &p,
        json!({"url": format!("{base}/missing"), "expect_status": [404]}),
    )
    .await
    .unwrap();
    assert_eq!(r["status"], 404);

    let e = call(&p, json!({"url": format!("{base}/slow"), "timeout": 0.3}))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NetworkTimeout, "{e}");
    let e = call(&p, json!({"url": format!("{base}/big")}))
        .await
        .unwrap_err();
    assert!(e.message.contains("larger than 1024 bytes"), "{e}");

    for bad in [
        json!({}),
        json!({"url": "not a url"}),
        json!({"url": format!("{base}/json"), "json": 1, "body": "x"}),
        json!({"url": format!("{base}/json"), "method": "NOT A METHOD"}),
    ] {
        let e = call(&p, bad.clone()).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParameters, "{bad}: {e}");
    }
}

#[tokio::test]
async fn private_loopback_and_metadata_targets_are_refused() {
    let base = serve().await;
    let port = base.rsplit(':').next().unwrap().to_string();
    let guarded = HttpProvider::new(HttpConfig::default()).unwrap();
    for url in [
        format!("http://127.0.0.1:{port}/json"),
        format!("http://[::1]:{port}/json"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.1.2.3/".to_string(),
        "http://192.168.0.1/".to_string(),
        "http://0.0.0.0/".to_string(),
        "http://[::ffff:127.0.0.1]/".to_string(),
        "file:///etc/passwd".to_string(),
    ] {
        let e = call(&guarded, json!({"url": url})).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::AddressBlocked, "{url}: {e}");
    }
    // A name that resolves to loopback is refused by the resolver itself.
    let e = call(
        &guarded,
        json!({"url": format!("http://localhost:{port}/json")}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::AddressBlocked, "{e}");
    assert!(e.message.contains("localhost"), "{e}");

    // Redirects from an allowed host into private space are refused per hop.
    let p = provider();
    for path in ["/to-metadata", "/to-private"] {
        let e = call(&p, json!({"url": format!("{base}{path}")}))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::AddressBlocked, "{path}: {e}");
    }
    let to_localhost = HttpProvider::new(HttpConfig {
        allow_hosts: vec!["127.0.0.1".into()],
        ..HttpConfig::default()
    })
    .unwrap();
    let e = call(
        &to_localhost,
        json!({"url": format!("http://localhost:{port}/json")}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e.code,
        ErrorCode::AddressBlocked,
        "allowing an IP does not allow other names: {e}"
    );

    // allow_private turns the guard off.
    let open = HttpProvider::new(HttpConfig {
        allow_private: true,
        ..HttpConfig::default()
    })
    .unwrap();
    let r = call(
        &open,
        json!({"url": format!("http://localhost:{port}/json")}),
    )
    .await
    .unwrap();
    assert_eq!(r["json"]["ok"], true);
}

#[test]
fn the_blocklist_covers_the_special_ranges() {
    for ip in [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:10.0.0.1",
        "64:ff9b::a00:1",
    ] {
        assert!(is_blocked(ip.parse().unwrap()), "{ip}");
    }
    for ip in [
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "172.32.0.1",
        "100.128.0.1",
    ] {
        assert!(!is_blocked(ip.parse().unwrap()), "{ip}");
    }
}
