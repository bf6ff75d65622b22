use super::*;

fn examples() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/providers"
    ))
}

fn calculator() -> JsonRpcProvider {
    let (spec, dir) = load(&examples().join("calculator.yaml")).unwrap();
    JsonRpcProvider::new(spec, dir)
}

async fn call(p: &JsonRpcProvider, method: &str, params: Value) -> Result<Value, GzError> {
    p.call(method, params, &CallContext::detached("t")).await
}

#[tokio::test]
async fn stdio_provider_answers_and_validates() {
    let p = calculator();
    assert_eq!(p.protocol(), "calculator");
    assert_eq!(p.methods().len(), 3);
    let r = call(&p, "calculator/add", json!({"a": 2, "b": 40}))
        .await
        .unwrap();
    assert_eq!(r["result"], 42);
    let r = call(&p, "calculator/stats", json!({"numbers": [1, 2, 3]}))
        .await
        .unwrap();
    assert_eq!(r["result"]["mean"], 2.0);

    // Params are checked against the schema before anything is sent.
    let e = call(&p, "calculator/add", json!({"a": "two", "b": 1}))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidParameters);
    assert!(
        e.message.contains("/a") && e.message.contains("calculator/add"),
        "{e}"
    );
    let e = call(&p, "calculator/add", json!({"a": 1}))
        .await
        .unwrap_err();
    assert!(e.message.contains("\"b\" is a required property"), "{e}");
    // A JSON-RPC error object becomes GZ2044 with its message.
    let e = call(&p, "calculator/divide", json!({"a": 1, "b": 0}))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::JsonRpcError);
    assert!(e.message.contains("division by zero"), "{e}");
    assert!(!e.retryable);
    let e = call(&p, "calculator/sqrt", json!({"x": 4}))
        .await
        .unwrap_err();
    assert!(e.hint_text().contains("add, divide, stats"), "{e:?}");
    p.shutdown().await;
}

#[tokio::test]
async fn concurrent_calls_share_a_bounded_pool() {
    let p = std::sync::Arc::new(calculator());
    let calls = (0..40).map(|i| {
        let p = p.clone();
        async move { call(&p, "calculator/add", json!({"a": i, "b": 1})).await }
    });
    let results = futures_util::future::join_all(calls).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap()["result"], json!(i + 1));
    }
    assert!(
        p.idle.lock().unwrap().len() <= 2,
        "no more processes than max_connections"
    );
    p.shutdown().await;
}

fn broken(command: &str, timeout: f64) -> JsonRpcProvider {
    let spec = ProviderSpec {
        name: "broken".into(),
        version: None,
        description: None,
        transport: TransportSpec {
            command: vec!["sh".into(), "-c".into(), command.into()],
            env: BTreeMap::new(),
            url: None,
            max_connections: 1,
            max_queue: 10,
            timeout,
        },
        methods: BTreeMap::from([("go".to_string(), MethodSpec::default())]),
    };
    JsonRpcProvider::new(spec, std::env::temp_dir())
}

#[tokio::test]
async fn garbage_silence_and_death_are_gz_errors_and_open_the_circuit() {
    let garbage = broken("read line; echo 'not json'; sleep 5", 5.0);
    let e = call(&garbage, "broken/go", json!({})).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::CustomProviderFailed);
    assert!(e.message.contains("not JSON-RPC"), "{e}");

    let silent = broken("sleep 30", 0.3);
    let e = call(&silent, "broken/go", json!({})).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::TaskTimeout, "{e}");

    let dies = broken("exit 3", 5.0);
    for _ in 0..FAILURES_TO_OPEN {
        let e = call(&dies, "broken/go", json!({})).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::CustomProviderFailed, "{e}");
    }
    // Now it fails fast without starting anything, and says so.
    let e = call(&dies, "broken/go", json!({})).await.unwrap_err();
    assert!(e.message.contains("circuit open"), "{e}");
    assert_eq!(dies.health().await.status, crate::HealthStatus::Unhealthy);
}

#[tokio::test]
async fn http_transport_speaks_json_rpc() {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/rpc",
        post(|axum::Json(req): axum::Json<Value>| async move {
            let p = &req["params"];
            axum::Json(json!({"jsonrpc": "2.0", "id": req["id"], "result": p["a"].as_i64().unwrap_or(0) * p["b"].as_i64().unwrap_or(0)}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/rpc", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let spec = ProviderSpec {
        name: "mul".into(),
        version: None,
        description: None,
        transport: TransportSpec {
            command: vec![],
            env: BTreeMap::new(),
            url: Some(url),
            max_connections: 4,
            max_queue: 10,
            timeout: 5.0,
        },
        methods: BTreeMap::from([("times".to_string(), MethodSpec::default())]),
    };
    let p = JsonRpcProvider::new(spec, std::env::temp_dir());
    let r = call(&p, "mul/times", json!({"a": 6, "b": 7}))
        .await
        .unwrap();
    assert_eq!(r["result"], 42);
}

#[test]
fn bad_provider_files_are_gz9003_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "reserved.yaml",
            "name: llm\ntransport: {command: [x]}\nmethods: {a: {}}\n",
            "cannot be a custom protocol name",
        ),
        (
            "both.yaml",
            "name: p\ntransport: {command: [x], url: 'http://h'}\nmethods: {a: {}}\n",
            "exactly one of",
        ),
        (
            "none.yaml",
            "name: p\ntransport: {command: [x]}\nmethods: {}\n",
            "no methods",
        ),
        (
            "schema.yaml",
            "name: p\ntransport: {command: [x]}\nmethods: {a: {params: {type: 12}}}\n",
            "not a valid JSON Schema",
        ),
        (
            "typo.yaml",
            "name: p\ntransprt: {command: [x]}\nmethods: {a: {}}\n",
            "not a provider description",
        ),
    ];
    for (file, text, want) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        let e = load(&path).unwrap_err();
        assert_eq!(e.code, ErrorCode::ConfigInvalid, "{file}: {e}");
        assert!(e.message.contains(want), "{file}: {e}");
        assert!(e.location.unwrap().contains(file));
    }
}
