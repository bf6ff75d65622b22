//! The LLM provider against the Ollama test double: wire format, streaming,
//! failover, circuit breaking, strategies, structured output, bad servers.

use super::*;
use gleitzeit_testkit::{Behavior, DoubleConfig, OllamaDouble, Reply};
use std::sync::Mutex;

async fn double(config: DoubleConfig) -> OllamaDouble {
    OllamaDouble::start(config).await.expect("start double")
}

fn endpoint(name: &str, url: &str) -> EndpointConfig {
    EndpointConfig {
        name: name.into(),
        url: url.into(),
        kind: Some(Dialect::Ollama),
        max_concurrent: 4,
        ..EndpointConfig::default()
    }
}

fn provider(endpoints: Vec<EndpointConfig>, tweak: impl FnOnce(&mut LlmConfig)) -> LlmProvider {
    let mut config = LlmConfig {
        endpoints,
        health_interval_secs: 0.0,
        ..LlmConfig::default()
    };
    tweak(&mut config);
    LlmProvider::new(config, None).unwrap()
}

fn collecting_ctx() -> (CallContext, Arc<Mutex<Vec<String>>>) {
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let seen = tokens.clone();
    let mut ctx = CallContext::detached("t");
    ctx.events = Some(Arc::new(move |event| {
        if let ProviderEvent::Token { text } = event {
            seen.lock().unwrap().push(text);
        }
    }));
    (ctx, tokens)
}

fn chat(text: &str) -> Value {
    json!({"model": "llama3.2", "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn chat_streams_tokens_and_reports_usage() {
    let server = double(DoubleConfig::default()).await;
    let llm = provider(vec![endpoint("local", &server.url())], |_| {});
    let (ctx, tokens) = collecting_ctx();
    let params = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "tell me three things"}],
                        "temperature": 0.2, "max_tokens": 50, "seed": 3, "stop": ["END"]});
    let result = llm.call("llm/chat", params, &ctx).await.unwrap();
    assert_eq!(result["response"], "echo: tell me three things");
    let streamed = tokens.lock().unwrap().concat();
    assert_eq!(
        streamed, "echo: tell me three things",
        "tokens arrive in order"
    );
    assert!(
        tokens.lock().unwrap().len() > 1,
        "streamed, not in one piece"
    );
    assert_eq!(result["endpoint"], "local");
    assert_eq!(result["model"], "llama3.2");
    assert_eq!(result["usage"]["prompt_tokens"], 4);
    assert!(result["usage"]["completion_tokens"].as_u64().unwrap() >= 4);
    assert!(result["first_token_ms"].is_u64());
    let body = server.stats().last_body("/api/chat").cloned().unwrap();
    assert_eq!(body["stream"], true);
    assert_eq!(
        body["options"],
        json!({"temperature": 0.2, "num_predict": 50, "seed": 3, "stop": ["END"]})
    );
}

#[tokio::test]
async fn prompt_and_system_become_messages_and_generate_uses_prompt() {
    let server = double(DoubleConfig::default()).await;
    let llm = provider(vec![endpoint("local", &server.url())], |_| {});
    let ctx = CallContext::detached("t");
    let result = llm
        .call(
            "llm/chat",
            json!({"model": "llama3.2", "prompt": "hi", "system": "be brief"}),
            &ctx,
        )
        .await
        .unwrap();
    assert_eq!(result["response"], "echo: hi");
    let body = server.stats().last_body("/api/chat").cloned().unwrap();
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    );
    let result = llm
        .call(
            "llm/generate",
            json!({"model": "llama3.2", "prompt": "complete me"}),
            &ctx,
        )
        .await
        .unwrap();
    assert_eq!(result["response"], "echo: complete me");
    assert_eq!(
        server.stats().last_body("/api/generate").unwrap()["prompt"],
        "complete me"
    );
}

#[tokio::test]
async fn embeddings_for_text_and_lists() {
    let server = double(DoubleConfig::default()).await;
    let llm = provider(vec![endpoint("local", &server.url())], |_| {});
    let ctx = CallContext::detached("t");
    let one = llm
        .call(
            "llm/embed",
            json!({"model": "llama3.2", "text": "hello"}),
            &ctx,
        )
        .await
        .unwrap();
    assert_eq!(one["embeddings"].as_array().unwrap().len(), 1);
    assert_eq!(one["dimensions"], 8);
    let two = llm
        .call(
            "llm/embed",
            json!({"model": "llama3.2", "input": ["hello", "world"]}),
            &ctx,
        )
        .await
        .unwrap();
    assert_eq!(two["embeddings"].as_array().unwrap().len(), 2);
    assert_eq!(
        two["embeddings"][0], one["embeddings"][0],
        "deterministic per text"
    );
}

#[tokio::test]
async fn vision_attaches_images_to_the_user_message() {
    let server = double(DoubleConfig::default()).await;
    let llm = provider(vec![endpoint("local", &server.url())], |_| {});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("photo.png");
    std::fs::write(
        &path,
        [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0],
    )
    .unwrap();
    let mut ctx = CallContext::detached("t");
    ctx.files = crate::FileGuard::under(&[dir.path().to_path_buf()]);
    let result = llm
        .call(
            "llm/vision",
            json!({"model": "llava", "prompt": "Describe this image", "images": [path.to_str().unwrap()]}),
            &ctx,
        )
        .await
        .unwrap();
    assert_eq!(result["response"], "echo: Describe this image");
    let body = server.stats().last_body("/api/chat").cloned().unwrap();
    assert_eq!(body["messages"][0]["images"].as_array().unwrap().len(), 1);
    let missing = llm
        .call(
            "llm/vision",
            json!({"model": "llava", "prompt": "x", "images": [dir.path().join("nope.jpg")]}),
            &ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(missing.code, ErrorCode::FileNotFound);
    // Relative to the working directory, which is not among this call's roots.
    let outside = llm
        .call(
            "llm/vision",
            json!({"model": "llava", "prompt": "x", "images": ["nope.jpg"]}),
            &ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(outside.code, ErrorCode::FileAccessDenied);
}

#[tokio::test]
async fn fails_over_to_the_next_endpoint_and_counts_it() {
    let broken = double(DoubleConfig::default().with_behavior(Behavior::fail(500, "boom"))).await;
    let good = double(DoubleConfig::default()).await;
    let mut first = endpoint("broken", &broken.url());
    first.priority = 10;
    let llm = provider(vec![first, endpoint("good", &good.url())], |_| {});
    let result = llm
        .call("llm/chat", chat("hi"), &CallContext::detached("t"))
        .await
        .unwrap();
    assert_eq!(result["endpoint"], "good");
    assert_eq!(result["failovers"], 1);
    assert_eq!(broken.stats().chat, 1);
}

#[tokio::test]
async fn circuit_opens_after_repeated_failures_and_recovers_after_cooldown() {
    let broken =
        double(DoubleConfig::default().with_behavior(Behavior::fail(503, "overloaded"))).await;
    let good = double(DoubleConfig::default()).await;
    let mut first = endpoint("broken", &broken.url());
    first.priority = 10;
    let llm = provider(vec![first, endpoint("good", &good.url())], |c| {
        c.failure_threshold = 2;
        c.circuit_cooldown_secs = 0.3;
        c.strategy = Strategy::FastestResponse;
    });
    let ctx = CallContext::detached("t");
    for _ in 0..5 {
        llm.call("llm/chat", chat("hi"), &ctx).await.unwrap();
    }
    assert_eq!(broken.stats().chat, 2, "open circuit keeps requests away");
    let status = llm.status();
    assert_eq!(status[0].circuit, fleet::Circuit::Open);
    broken.set_behavior(Behavior::Normal);
    // The scenario: the circuit's cooldown (0.3 s) runs out on the clock.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..3 {
        llm.call("llm/chat", chat("hi"), &ctx).await.unwrap();
    }
    assert!(
        broken.stats().chat >= 3,
        "a trial request went through after the cooldown"
    );
    assert_eq!(llm.status()[0].circuit, fleet::Circuit::Closed);
}

#[tokio::test]
async fn unknown_model_is_gz2011_and_aliases_and_fallbacks_map_names() {
    let server = double(DoubleConfig::default().with_models(["gemma3:latest"])).await;
    let ctx = CallContext::detached("t");
    let plain = provider(vec![endpoint("local", &server.url())], |_| {});
    let error = plain.call("llm/chat", chat("hi"), &ctx).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::ModelNotFound);
    assert!(error.message.contains("llama3.2"), "{}", error.message);
    assert!(
        error.hint_text().contains("ollama pull"),
        "{}",
        error.hint_text()
    );

    let aliased = provider(vec![endpoint("local", &server.url())], |c| {
        c.models.insert("llama3.2".into(), vec!["gemma3".into()]);
    });
    let result = aliased.call("llm/chat", chat("hi"), &ctx).await.unwrap();
    assert_eq!(result["model"], "gemma3");

    let with_fallback = plain
        .call(
            "llm/chat",
            json!({"model": "missing", "fallback_models": ["gemma3"], "prompt": "x"}),
            &ctx,
        )
        .await
        .unwrap();
    assert_eq!(with_fallback["model"], "gemma3");
}

#[tokio::test]
async fn configured_model_lists_route_requests() {
    let cpu = double(DoubleConfig::default()).await;
    let gpu = double(DoubleConfig::default()).await;
    let mut cpu_config = endpoint("cpu", &cpu.url());
    cpu_config.models = vec!["llama3.2".into()];
    let mut gpu_config = endpoint("gpu", &gpu.url());
    gpu_config.models = vec!["llama3.2".into(), "llava".into()];
    gpu_config.tags = vec!["gpu".into()];
    let llm = provider(vec![cpu_config, gpu_config], |_| {});
    let ctx = CallContext::detached("t");
    let result = llm
        .call("llm/chat", json!({"model": "llava", "prompt": "x"}), &ctx)
        .await
        .unwrap();
    assert_eq!(result["endpoint"], "gpu");
    let tagged = llm
        .call(
            "llm/chat",
            json!({"model": "llama3.2", "prompt": "x", "tags": ["gpu"]}),
            &ctx,
        )
        .await
        .unwrap();
    assert_eq!(tagged["endpoint"], "gpu");
    let none = llm
        .call(
            "llm/chat",
            json!({"model": "llama3.2", "prompt": "x", "tags": ["tpu"]}),
            &ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(none.code, ErrorCode::NoHealthyEndpoint);
}

#[tokio::test]
async fn round_robin_spreads_and_least_loaded_respects_max_concurrent() {
    let a = double(DoubleConfig::default()).await;
    let b = double(DoubleConfig::default()).await;
    let llm = provider(
        vec![endpoint("a", &a.url()), endpoint("b", &b.url())],
        |c| c.strategy = Strategy::RoundRobin,
    );
    let ctx = CallContext::detached("t");
    for _ in 0..6 {
        llm.call("llm/chat", chat("hi"), &ctx).await.unwrap();
    }
    assert_eq!((a.stats().chat, b.stats().chat), (3, 3));

    let slow = double(DoubleConfig::default().with_token_delay(Duration::from_millis(20))).await;
    let mut only = endpoint("slow", &slow.url());
    only.max_concurrent = 2;
    let llm = Arc::new(provider(vec![only], |_| {}));
    let calls = (0..8).map(|_| {
        let llm = llm.clone();
        tokio::spawn(async move {
            llm.call("llm/chat", chat("a b c"), &CallContext::detached("t"))
                .await
        })
    });
    for call in futures_util::future::join_all(calls).await {
        call.unwrap().unwrap();
    }
    assert_eq!(slow.stats().chat, 8);
    assert!(
        slow.stats().max_in_flight <= 2,
        "max_concurrent exceeded: {}",
        slow.stats().max_in_flight
    );
}

#[tokio::test]
async fn model_affinity_prefers_the_endpoint_that_served_the_model() {
    let a = double(DoubleConfig::default()).await;
    let b = double(DoubleConfig::default()).await;
    let mut second = endpoint("b", &b.url());
    second.priority = 5;
    let llm = provider(vec![endpoint("a", &a.url()), second], |c| {
        c.strategy = Strategy::ModelAffinity
    });
    let ctx = CallContext::detached("t");
    llm.call("llm/chat", json!({"model": "llava", "prompt": "x"}), &ctx)
        .await
        .unwrap();
    for _ in 0..3 {
        llm.call("llm/chat", chat("x"), &ctx).await.unwrap();
    }
    // llama3.2 first went to b (priority); it stays there.
    assert_eq!(b.stats().chat, 4);
    assert_eq!(a.stats().chat, 0);
}

#[tokio::test]
async fn structured_output_is_parsed_and_validated() {
    let schema =
        json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
    let good = double(DoubleConfig::default().with_reply(Reply::Json(json!({"n": 3})))).await;
    let llm = provider(vec![endpoint("local", &good.url())], |_| {});
    let ctx = CallContext::detached("t");
    let result = llm
        .call(
            "llm/chat",
            json!({"model": "llama3.2", "prompt": "count", "format": schema}),
            &ctx,
        )
        .await
        .unwrap();
    assert_eq!(result["parsed"], json!({"n": 3}));
    assert_eq!(
        good.stats().last_body("/api/chat").unwrap()["format"],
        schema
    );

    let bad = double(DoubleConfig::default().with_reply(Reply::Json(json!({"n": "three"})))).await;
    let llm = provider(vec![endpoint("local", &bad.url())], |_| {});
    let error = llm
        .call(
            "llm/chat",
            json!({"model": "llama3.2", "prompt": "count", "format": schema}),
            &ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::StructuredOutputInvalid);
    assert!(error.retryable);
    assert!(
        error.message.contains("/n"),
        "names the violation: {}",
        error.message
    );

    let prose = double(DoubleConfig::default().with_reply(Reply::Fixed("not json".into()))).await;
    let llm = provider(vec![endpoint("local", &prose.url())], |_| {});
    let error = llm
        .call(
            "llm/chat",
            json!({"model": "llama3.2", "prompt": "x", "format": "json"}),
            &ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::StructuredOutputInvalid);

    let invalid_schema = llm
        .call(
            "llm/chat",
            json!({"model": "llama3.2", "prompt": "x", "format": {"type": 5}}),
            &ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(invalid_schema.code, ErrorCode::InvalidParameters);
}

#[tokio::test]
async fn broken_streams_are_retryable_errors_naming_the_endpoint() {
    let ctx = CallContext::detached("t");
    for behavior in [
        Behavior::MalformedStream,
        Behavior::CutStream,
        Behavior::HangUp,
    ] {
        let server = double(DoubleConfig::default().with_behavior(behavior.clone())).await;
        let llm = provider(vec![endpoint("flaky", &server.url())], |_| {});
        let error = tokio::time::timeout(
            Duration::from_secs(10),
            llm.call("llm/chat", chat("a b c d"), &ctx),
        )
        .await
        .expect("never hangs")
        .unwrap_err();
        assert!(error.retryable, "{behavior:?}: {error}");
        assert!(
            error.message.contains("flaky"),
            "{behavior:?}: {}",
            error.message
        );
    }
}

#[tokio::test]
async fn rate_limit_and_unreachable_endpoints() {
    let ctx = CallContext::detached("t");
    let limited = double(DoubleConfig::default().with_behavior(Behavior::Fail {
        status: 429,
        body: json!({"error": "slow down"}),
        retry_after: Some(2),
    }))
    .await;
    let llm = provider(vec![endpoint("limited", &limited.url())], |_| {});
    let error = llm.call("llm/chat", chat("x"), &ctx).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::RateLimited);
    assert_eq!(error.details["retry_after"], 2);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let llm = provider(
        vec![endpoint("down", &format!("http://127.0.0.1:{port}"))],
        |_| {},
    );
    let error = llm.call("llm/chat", chat("x"), &ctx).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::LlmEndpointUnreachable);
    assert!(
        error.message.contains("down") && error.message.contains(&port.to_string()),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn dialect_is_probed_when_not_configured() {
    let server = double(DoubleConfig::default()).await;
    let mut config = endpoint("auto", &server.url());
    config.kind = None;
    let llm = provider(vec![config], |_| {});
    llm.call("llm/chat", chat("x"), &CallContext::detached("t"))
        .await
        .unwrap();
    assert_eq!(llm.status()[0].kind, Some(Dialect::Ollama));
    let checked = llm.check_all().await;
    assert_eq!(checked[0].healthy, Some(true));
    assert!(checked[0].models.iter().any(|m| m == "llama3.2:latest"));
}

#[tokio::test]
async fn dropping_a_call_aborts_the_request() {
    let server = double(DoubleConfig::default().with_token_delay(Duration::from_millis(200))).await;
    let llm = Arc::new(provider(vec![endpoint("slow", &server.url())], |_| {}));
    let task = {
        let llm = llm.clone();
        tokio::spawn(async move {
            llm.call(
                "llm/chat",
                chat("one two three four five six seven eight"),
                &CallContext::detached("t"),
            )
            .await
        })
    };
    gleitzeit_testkit::poll::until_async(
        "the request to reach the server",
        || async { server.stats().in_flight },
        |in_flight| *in_flight == 1,
    )
    .await;
    task.abort();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().in_flight > 0 {
        assert!(
            Instant::now() < deadline,
            "request still running on the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(llm.status()[0].in_flight, 0, "slot released");
}

#[tokio::test]
async fn bad_parameters() {
    let server = double(DoubleConfig::default()).await;
    let llm = provider(vec![endpoint("local", &server.url())], |_| {});
    let ctx = CallContext::detached("t");
    for (method, params) in [
        ("llm/chat", json!({"prompt": "no model"})),
        ("llm/chat", json!({"model": "m"})),
        ("llm/chat", json!({"model": "m", "messages": "not a list"})),
        ("llm/generate", json!({"model": "m"})),
        ("llm/vision", json!({"model": "m", "prompt": "no image"})),
        ("llm/embed", json!({"model": "m"})),
        (
            "llm/chat",
            json!({"model": "m", "prompt": "x", "format": "yaml"}),
        ),
    ] {
        let error = llm.call(method, params.clone(), &ctx).await.unwrap_err();
        assert_eq!(
            error.code,
            ErrorCode::InvalidParameters,
            "{method} {params}"
        );
    }
    assert_eq!(server.stats().chat, 0, "nothing was sent");
}

#[tokio::test]
async fn api_keys_come_from_the_environment_and_are_never_shown() {
    let server = double(DoubleConfig::default()).await;
    let secret = "sk-test-0123456789-do-not-print";
    std::env::set_var("GLEITZEIT_TEST_LLM_KEY_7F3A", secret);
    let mut config = endpoint("keyed", &server.url());
    config.api_key_env = Some("GLEITZEIT_TEST_LLM_KEY_7F3A".into());
    let llm = provider(vec![config.clone()], |_| {});
    llm.call("llm/chat", chat("hi"), &CallContext::detached("t"))
        .await
        .unwrap();
    let status = llm.status();
    assert!(status[0].api_key);
    let shown = format!(
        "{} {:?} {:?}",
        serde_json::to_string(&status).unwrap(),
        status,
        config
    );
    assert!(!shown.contains(secret), "{shown}");
    let unset = EndpointConfig {
        api_key_env: Some("GLEITZEIT_TEST_LLM_KEY_UNSET_9B1C".into()),
        ..config
    };
    assert!(!provider(vec![unset], |_| {}).status()[0].api_key);
}

/// `n` chat calls started together; their results, each one required to succeed.
async fn all_at_once(llm: &Arc<LlmProvider>, n: usize) -> Vec<Value> {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let llm = llm.clone();
            tokio::spawn(async move {
                llm.call(
                    "llm/chat",
                    chat(&format!("call {i}")),
                    &CallContext::detached("t"),
                )
                .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap().expect("every call completes"));
    }
    results
}

/// The most requests any sliding window of `span` saw.

#[tokio::test]
async fn a_fan_out_never_exceeds_endpoint_or_model_limits() {
    let slow = double(DoubleConfig::default()).await;
    let fast = double(DoubleConfig::default()).await;
    let mut a = endpoint("a", &slow.url());
    a.requests_per_second = Some(8.0);
    a.max_concurrent = 16;
    let mut b = endpoint("b", &fast.url());
    b.requests_per_second = Some(12.0);
    b.max_concurrent = 16;
    let llm = Arc::new(provider(vec![a, b], |_| {}));
    let mut by_endpoint = std::collections::HashMap::new();
    for result in all_at_once(&llm, 60).await {
        *by_endpoint
            .entry(result["endpoint"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    let times = |server: &OllamaDouble| -> Vec<std::time::Instant> {
        server
            .stats()
            .requests_to("/api/chat")
            .map(|r| r.received_at)
            .collect()
    };
    let second = Duration::from_secs(1);
    assert!(
        gleitzeit_testkit::busiest_window(&times(&slow), second) <= 8,
        "endpoint a over its limit"
    );
    assert!(
        gleitzeit_testkit::busiest_window(&times(&fast), second) <= 12,
        "endpoint b over its limit"
    );
    assert_eq!(by_endpoint.values().sum::<usize>(), 60);
    assert!(by_endpoint["b"] > by_endpoint["a"], "{by_endpoint:?}");

    // A model limit holds across both endpoints.
    let one = double(DoubleConfig::default()).await;
    let two = double(DoubleConfig::default()).await;
    let llm = Arc::new(provider(
        vec![endpoint("one", &one.url()), endpoint("two", &two.url())],
        |c| {
            c.model_limits.insert(
                "llama3.2".into(),
                limits::RateLimits {
                    requests_per_second: Some(5.0),
                    ..Default::default()
                },
            );
        },
    ));
    all_at_once(&llm, 15).await;
    let mut all = times(&one);
    all.extend(times(&two));
    assert_eq!(all.len(), 15);
    assert!(
        gleitzeit_testkit::busiest_window(&all, second) <= 5,
        "model limit exceeded"
    );
}

/// Shared limits that remember what they were asked, or cannot be reached.
#[derive(Default)]
struct SpyLimits {
    unreachable: bool,
    log: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl limits::SharedLimits for SpyLimits {
    async fn try_admit(
        &self,
        scopes: &[limits::SharedScope],
        tokens: f64,
    ) -> Result<Result<u64, Duration>, GzError> {
        if self.unreachable {
            return Err(GzError::new(ErrorCode::RedisConnectionFailed, "down"));
        }
        let keys: Vec<&str> = scopes.iter().map(|s| s.key.as_str()).collect();
        self.log
            .lock()
            .unwrap()
            .push(format!("admit {} {tokens}", keys.join(",")));
        Ok(Ok(7))
    }

    async fn correct(
        &self,
        _: &[limits::SharedScope],
        ticket: u64,
        tokens: f64,
    ) -> Result<(), GzError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("correct {ticket} {tokens}"));
        Ok(())
    }

    async fn release(&self, _: &[limits::SharedScope], ticket: u64) -> Result<(), GzError> {
        self.log.lock().unwrap().push(format!("release {ticket}"));
        Ok(())
    }
}

#[tokio::test]
async fn shared_limits_count_limited_calls_and_fall_back_when_unreachable() {
    let server = double(DoubleConfig::default()).await;
    let mut limited = endpoint("a", &server.url());
    limited.requests_per_second = Some(2.0);
    limited.max_concurrent = 8;
    let spy = Arc::new(SpyLimits::default());
    let llm = provider(vec![limited.clone()], |c| {
        c.model_limits.insert(
            "llama3.2".into(),
            limits::RateLimits {
                tokens_per_minute: Some(1e6),
                ..Default::default()
            },
        );
    });
    llm.share_limits(spy.clone());
    let reply = llm
        .call("llm/chat", chat("hello there"), &CallContext::detached("t"))
        .await
        .unwrap();
    let used = reply["usage"]["total_tokens"].as_u64().unwrap();
    let log = spy.log.lock().unwrap().clone();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log[0].starts_with("admit model:llama3.2,endpoint:a "),
        "{log:?}"
    );
    assert_eq!(log[1], format!("correct 7 {used}"));

    // An endpoint and model without limits never asks the shared store.
    let free_server = double(DoubleConfig::default()).await;
    let spy = Arc::new(SpyLimits::default());
    let llm = provider(vec![endpoint("free", &free_server.url())], |_| {});
    llm.share_limits(spy.clone());
    llm.call("llm/chat", chat("hi"), &CallContext::detached("t"))
        .await
        .unwrap();
    assert!(spy.log.lock().unwrap().is_empty());

    // With the shared store gone, the node's own limits still hold.
    let lonely = double(DoubleConfig::default()).await;
    let mut limited = endpoint("a", &lonely.url());
    limited.requests_per_second = Some(2.0);
    limited.max_concurrent = 8;
    let llm = Arc::new(provider(vec![limited], |_| {}));
    llm.share_limits(Arc::new(SpyLimits {
        unreachable: true,
        ..SpyLimits::default()
    }));
    all_at_once(&llm, 6).await;
    let times: Vec<_> = lonely
        .stats()
        .requests_to("/api/chat")
        .map(|r| r.received_at)
        .collect();
    assert_eq!(times.len(), 6);
    assert!(gleitzeit_testkit::busiest_window(&times, Duration::from_secs(1)) <= 2);
}

#[tokio::test]
async fn retry_after_is_honoured_and_others_take_the_work_meanwhile() {
    let busy = double(DoubleConfig::default()).await;
    busy.set_behavior(Behavior::Fail {
        status: 429,
        body: json!({"error": "slow down"}),
        retry_after: Some(30),
    });
    let free = double(DoubleConfig::default()).await;
    let mut first = endpoint("busy", &busy.url());
    first.priority = 10;
    let llm = provider(vec![first, endpoint("free", &free.url())], |c| {
        c.strategy = Strategy::FastestResponse;
    });
    for i in 0..5 {
        let result = llm
            .call(
                "llm/chat",
                chat(&format!("r {i}")),
                &CallContext::detached("t"),
            )
            .await
            .unwrap();
        assert_eq!(result["endpoint"], "free");
    }
    assert_eq!(
        busy.stats().requests_to("/api/chat").count(),
        1,
        "after its 429 the busy endpoint is left alone for its Retry-After"
    );
    let status = llm.fleet.status();
    assert_eq!(
        status[0].failures, 0,
        "a 429 says nothing bad about the endpoint"
    );

    // Alone, an endpoint that says 429 once is waited for, not failed.
    let only = double(DoubleConfig::default()).await;
    only.set_behavior(Behavior::FailFirst { n: 1, status: 429 });
    let llm = provider(vec![endpoint("only", &only.url())], |_| {});
    let result = llm
        .call("llm/chat", chat("patience"), &CallContext::detached("t"))
        .await
        .unwrap();
    assert_eq!(result["response"], "echo: patience");
    assert_eq!(only.stats().requests_to("/api/chat").count(), 2);
}

#[tokio::test]
async fn costs_come_from_the_price_table_and_local_endpoints_are_free() {
    let server = double(DoubleConfig::default()).await;
    let llm = provider(vec![endpoint("local", &server.url())], |_| {});
    let result = llm
        .call(
            "llm/chat",
            chat("what does this cost"),
            &CallContext::detached("t"),
        )
        .await
        .unwrap();
    assert_eq!(
        result["cost_usd"], 0.0,
        "a local endpoint without a price is free"
    );

    let priced = provider(vec![endpoint("local", &server.url())], |c| {
        c.prices.insert(
            "llama3.2".into(),
            Price {
                input: 2.0,
                output: 10.0,
            },
        );
    });
    let result = priced
        .call(
            "llm/chat",
            chat("what does this cost"),
            &CallContext::detached("t"),
        )
        .await
        .unwrap();
    let usage = &result["usage"];
    let expected = (usage["prompt_tokens"].as_f64().unwrap() * 2.0
        + usage["completion_tokens"].as_f64().unwrap() * 10.0)
        / 1e6;
    assert!((result["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12);

    // A remote endpoint with no price: unknown, not free.
    let remote = endpoint("remote", "http://203.0.113.7:8080");
    let unknown = provider(vec![remote.clone()], |_| {});
    assert_eq!(unknown.cost(&remote, "gpt-x", Some(10), Some(5)), None);
    assert!(is_local("http://127.0.0.1:11434") && is_local("http://localhost:8080/v1"));
    assert!(is_local("http://192.168.1.20:11434") && !is_local("https://api.example.com"));
}

#[test]
fn nonsense_limits_and_prices_are_config_errors() {
    let mut bad = endpoint("a", "http://127.0.0.1:1");
    bad.tokens_per_minute = Some(0.0);
    let err = LlmProvider::new(
        LlmConfig {
            endpoints: vec![bad],
            ..LlmConfig::default()
        },
        None,
    )
    .err()
    .unwrap();
    assert_eq!(err.code, ErrorCode::ConfigInvalid);
    assert!(
        err.message.contains("tokens_per_minute: 0"),
        "{}",
        err.message
    );
    let mut config = LlmConfig::default();
    config.prices.insert(
        "m".into(),
        Price {
            input: -1.0,
            output: 0.0,
        },
    );
    assert_eq!(
        LlmProvider::new(config, None).err().unwrap().code,
        ErrorCode::ConfigInvalid
    );
}
