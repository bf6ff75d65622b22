//! The OpenAI-compatible dialect against a real llama.cpp server running a small
//! real model (Gemma 3 270M, a base model: assertions are about structure —
//! tokens, usage, streaming order, schema-valid JSON — never about wording).

use gleitzeit_core::ErrorCode;
use gleitzeit_providers::llm::{Dialect, EndpointConfig, LlmConfig, LlmProvider};
use gleitzeit_providers::{CallContext, Provider, ProviderEvent};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

fn provider(kind: Option<Dialect>) -> LlmProvider {
    let config = LlmConfig {
        endpoints: vec![EndpointConfig {
            name: "llama".into(),
            url: gleitzeit_testkit::llama_server_url(),
            kind,
            max_concurrent: 4,
            ..EndpointConfig::default()
        }],
        health_interval_secs: 0.0,
        ..LlmConfig::default()
    };
    LlmProvider::new(config, None).unwrap()
}

fn collecting() -> (CallContext, Arc<Mutex<Vec<String>>>) {
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let seen = tokens.clone();
    let mut ctx = CallContext::detached("t");
    ctx.events = Some(Arc::new(move |e| {
        if let ProviderEvent::Token { text } = e {
            seen.lock().unwrap().push(text);
        }
    }));
    (ctx, tokens)
}

#[tokio::test]
async fn chat_streams_tokens_in_order_with_usage() {
    let llm = provider(Some(Dialect::Openai));
    let (ctx, tokens) = collecting();
    let result = llm
        .call(
            "llm/chat",
            json!({"model": "gemma3", "messages": [{"role": "user", "content": "Count: one, two, three,"}], "max_tokens": 24, "temperature": 0}),
            &ctx,
        )
        .await
        .unwrap();
    let streamed = tokens.lock().unwrap().clone();
    assert!(streamed.len() > 1, "streamed in pieces: {streamed:?}");
    assert_eq!(streamed.concat(), result["response"].as_str().unwrap());
    let usage = &result["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 3, "{usage}");
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!((1..=24).contains(&completion), "{usage}");
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + completion
    );
    assert_eq!(result["endpoint"], "llama");
    assert!(result["first_token_ms"].as_u64().unwrap() <= result["duration_ms"].as_u64().unwrap());
    assert!(["stop", "length"].contains(&result["finish_reason"].as_str().unwrap()));
}

#[tokio::test]
async fn dialect_is_probed_as_openai() {
    let llm = provider(None);
    let result = llm
        .call(
            "llm/generate",
            json!({"model": "any", "prompt": "The sky is", "max_tokens": 8}),
            &CallContext::detached("t"),
        )
        .await
        .unwrap();
    assert!(result["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
    assert_eq!(llm.status()[0].kind, Some(Dialect::Openai));
    let checked = llm.check_all().await;
    assert_eq!(checked[0].healthy, Some(true));
    assert!(!checked[0].models.is_empty());
}

#[tokio::test]
async fn json_schema_output_is_constrained_and_validated() {
    let llm = provider(Some(Dialect::Openai));
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "year": {"type": "integer", "minimum": 0, "maximum": 3000}},
        "required": ["name", "year"]
    });
    let result = llm
        .call(
            "llm/chat",
            json!({"model": "gemma3", "prompt": "A city and its founding year as JSON:", "format": schema, "max_tokens": 64, "temperature": 0}),
            &CallContext::detached("t"),
        )
        .await
        .unwrap();
    let parsed = &result["parsed"];
    assert!(parsed["name"].is_string(), "{result}");
    assert!(
        parsed["year"].is_i64() || parsed["year"].is_u64(),
        "{result}"
    );
    let reparsed: Value =
        serde_json::from_str(result["response"].as_str().unwrap().trim()).unwrap();
    assert_eq!(&reparsed, parsed);
}

#[tokio::test]
async fn stop_sequences_end_the_reply_early() {
    // Seeds are passed through too, but with 4 parallel slots batching makes
    // sampled output vary, so only the stop sequence is asserted.
    let llm = provider(Some(Dialect::Openai));
    let ctx = CallContext::detached("t");
    let counted = llm
        .call("llm/chat", json!({"model": "gemma3", "prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": 32, "temperature": 0, "seed": 42, "stop": [","]}), &ctx)
        .await
        .unwrap();
    assert!(
        !counted["response"].as_str().unwrap().contains(','),
        "{counted}"
    );
}

#[tokio::test]
async fn embeddings_have_the_model_dimension() {
    let llm = provider(Some(Dialect::Openai));
    let result = llm
        .call(
            "llm/embed",
            json!({"model": "gemma3", "input": ["hello", "world"]}),
            &CallContext::detached("t"),
        )
        .await
        .unwrap();
    let vectors = result["embeddings"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    assert_eq!(
        result["dimensions"].as_u64().unwrap() as usize,
        vectors[0].as_array().unwrap().len()
    );
    assert!(result["dimensions"].as_u64().unwrap() >= 64);
    assert_ne!(vectors[0], vectors[1]);
}

#[tokio::test]
async fn images_to_a_text_only_model_fail_clearly() {
    let llm = provider(Some(Dialect::Openai));
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let error = llm
        .call(
            "llm/vision",
            json!({"model": "gemma3", "prompt": "What is this?", "images": [png], "max_tokens": 8}),
            &CallContext::detached("t"),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::LlmRequestFailed);
    assert!(
        error.message.contains("llama") && error.message.contains("image"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn parallel_requests_share_the_four_slots() {
    let llm = Arc::new(provider(Some(Dialect::Openai)));
    let calls = (0..8).map(|i| {
        let llm = llm.clone();
        tokio::spawn(async move {
            llm.call(
                "llm/chat",
                json!({"model": "gemma3", "prompt": format!("Number {i}:"), "max_tokens": 8}),
                &CallContext::detached("t"),
            )
            .await
        })
    });
    for call in futures_util::future::join_all(calls).await {
        let result = call.unwrap().unwrap();
        assert!(result["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
    }
    assert_eq!(llm.status()[0].requests, 8);
    assert_eq!(llm.status()[0].in_flight, 0);
}
