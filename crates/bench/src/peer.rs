//! An OpenAI-compatible endpoint that answers at once, for measuring what
//! Gleitzeit itself adds to an LLM request. Against a real model the model's
//! own time (hundreds of ms on 2 cores) drowns a few ms of overhead in noise;
//! against this peer the only time left is the client's — reqwest directly, or
//! a Gleitzeit task. It streams the same SSE shape llama-server does
//! (role chunk, content chunks, a finish chunk with usage, `[DONE]`).

use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

const TOKENS: usize = 16;

/// Model turns of an agent against the peer: it asks for `noop` until the
/// conversation holds this many assistant turns, then answers.
pub const AGENT_TURNS: usize = 5;

async fn chat(Json(request): Json<Value>) -> axum::response::Response {
    let model = request["model"].as_str().unwrap_or("peer").to_string();
    let offered = request["tools"].as_array().is_some_and(|t| !t.is_empty());
    let turns = request["messages"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["role"] == "assistant").count());
    let chunk = |delta: Value, finish: Value, usage: Option<Value>| {
        let mut c = json!({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if let Some(u) = usage {
            c["usage"] = u;
        }
        format!("data: {c}\n\n")
    };
    let mut body = chunk(json!({"role": "assistant"}), Value::Null, None);
    if offered && turns + 1 < AGENT_TURNS {
        // One tool call, streamed as deltas the way llama-server sends them.
        body.push_str(&chunk(
            json!({"tool_calls": [{"index": 0, "id": format!("call_{turns}"), "type": "function", "function": {"name": "noop", "arguments": ""}}]}),
            Value::Null,
            None,
        ));
        let n = turns.to_string();
        for part in ["{\"value\": ", n.as_str(), "}"] {
            body.push_str(&chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                Value::Null,
                None,
            ));
        }
        body.push_str(&chunk(
            json!({}),
            json!("tool_calls"),
            Some(json!({"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12})),
        ));
        body.push_str("data: [DONE]\n\n");
        return ([("content-type", "text/event-stream")], body).into_response();
    }
    for i in 0..TOKENS {
        body.push_str(&chunk(
            json!({"content": format!("t{i} ")}),
            Value::Null,
            None,
        ));
    }
    body.push_str(&chunk(
        json!({}),
        json!("length"),
        Some(json!({"prompt_tokens": 8, "completion_tokens": TOKENS, "total_tokens": 8 + TOKENS})),
    ));
    body.push_str("data: [DONE]\n\n");
    ([("content-type", "text/event-stream")], body).into_response()
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": "gemma3", "object": "model"}]}))
}

/// Serves the peer on a free loopback port until the process ends.
pub fn start(rt: &tokio::runtime::Runtime) -> anyhow::Result<String> {
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }));
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}
