//! An OpenAI-compatible chat endpoint that speaks the tool protocol the way
//! llama-server and vLLM stream it: a role chunk, then each tool call as
//! deltas under its `index` — the first with `id`, `type` and the function's
//! `name`, then the arguments' JSON text in fragments, parallel calls
//! interleaved — a `finish_reason: "tool_calls"` chunk, a usage chunk and
//! `data: [DONE]`. Turns follow the conversation like the Ollama double's
//! ([`ToolTurn`], chosen by the number of assistant messages).

use crate::{lock, tokenize, word_count, ToolTurn};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

struct PeerState {
    turns: Vec<ToolTurn>,
    requests: Mutex<Vec<Value>>,
}

/// A running peer; dropping it stops the server.
pub struct OpenAiPeer {
    url: String,
    state: Arc<PeerState>,
    server: JoinHandle<()>,
}

impl OpenAiPeer {
    pub async fn start(turns: Vec<ToolTurn>) -> std::io::Result<OpenAiPeer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(PeerState {
            turns,
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route(
                "/v1/models",
                get(|| async {
                    Json(json!({"object": "list", "data": [{"id": "peer", "object": "model"}]}))
                }),
            )
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(OpenAiPeer { url, state, server })
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Every chat request body received, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.state.requests).clone()
    }
}

impl Drop for OpenAiPeer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn chunk(model: &str, delta: Value, finish: Value) -> String {
    let c = json!({"id": "chatcmpl-peer", "object": "chat.completion.chunk", "created": 0,
        "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {c}\n\n")
}

/// Splits `text` into pieces of at most `n` characters.
fn fragments(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

async fn chat(State(state): State<Arc<PeerState>>, Json(request): Json<Value>) -> Response {
    lock(&state.requests).push(request.clone());
    let model = request["model"].as_str().unwrap_or("peer").to_string();
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let offered = request["tools"].as_array().is_some_and(|t| !t.is_empty());
    let assistant_turns = messages.iter().filter(|m| m["role"] == "assistant").count();
    let turn = match (offered, state.turns.is_empty()) {
        (true, false) => state.turns[assistant_turns.min(state.turns.len() - 1)].clone(),
        _ => ToolTurn::Answer("peer answer".into()),
    };
    let prompt_tokens: u64 = messages
        .iter()
        .map(|m| {
            word_count(
                &m["content"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_default(),
            )
        })
        .sum();
    let mut body = chunk(
        &model,
        json!({"role": "assistant", "content": null}),
        Value::Null,
    );
    let (completion_tokens, finish) = match &turn {
        ToolTurn::Answer(text) => {
            let tokens = tokenize(text);
            for token in &tokens {
                body.push_str(&chunk(&model, json!({"content": token}), Value::Null));
            }
            (tokens.len() as u64, "stop")
        }
        ToolTurn::Call(calls) => {
            // Heads first, then the argument fragments round-robin.
            let texts: Vec<Vec<String>> = calls
                .iter()
                .map(|(_, args)| fragments(&args.to_string(), 7))
                .collect();
            for (i, (name, _)) in calls.iter().enumerate() {
                body.push_str(&chunk(
                    &model,
                    json!({"tool_calls": [{"index": i, "id": format!("call_peer_{assistant_turns}_{i}"), "type": "function", "function": {"name": name, "arguments": ""}}]}),
                    Value::Null,
                ));
            }
            let longest = texts.iter().map(Vec::len).max().unwrap_or(0);
            for k in 0..longest {
                for (i, parts) in texts.iter().enumerate() {
                    if let Some(part) = parts.get(k) {
                        body.push_str(&chunk(
                            &model,
                            json!({"tool_calls": [{"index": i, "function": {"arguments": part}}]}),
                            Value::Null,
                        ));
                    }
                }
            }
            (texts.iter().map(|t| t.len() as u64).sum(), "tool_calls")
        }
    };
    body.push_str(&chunk(&model, json!({}), json!(finish)));
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens});
    body.push_str(&format!(
        "data: {}\n\n",
        json!({"id": "chatcmpl-peer", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": usage})
    ));
    body.push_str("data: [DONE]\n\n");
    ([("content-type", "text/event-stream")], body).into_response()
}
