//! Test support for Gleitzeit.
//!
//! The main item is [`OllamaDouble`]: an in-process HTTP server on
//! `127.0.0.1:<random port>` that speaks Ollama's REST API (as of 0.5.x) on
//! the wire — same paths, field names, field order, content types, status
//! codes and error wording — so the product's Ollama client can be tested
//! without an Ollama binary. Tests steer it with a [`DoubleConfig`], switch
//! failure modes at runtime with [`OllamaDouble::set_behavior`], and inspect
//! what it received with [`OllamaDouble::stats`].
//!
//! Endpoints: `GET|HEAD /`, `GET /api/version`, `GET /api/tags`,
//! `GET /api/ps`, `POST /api/show`, `POST /api/chat`, `POST /api/generate`,
//! `POST /api/embed` and the legacy `POST /api/embeddings`. Anything else is
//! `404 page not found` (text), like Ollama's router.
//!
//! Tool calling: a chat that carries `tools` is answered from
//! [`DoubleConfig::tool_turns`] — a scripted [`ToolTurn`] per assistant turn,
//! sent as Ollama sends it (`message.tool_calls` with arguments as objects and
//! no ids, in one chunk when streaming, in the final message otherwise).
//!
//! Determinism: replies are split into tokens by [`tokenize`], prompt token
//! counts are [`word_count`]s, embeddings come from [`embedding_for`]; tests
//! can call these to compute the numbers they expect.

#![forbid(unsafe_code)]

mod handlers;
mod llama;
mod openai;
pub mod poll;
pub use llama::llama_server_url;
pub use openai::OpenAiPeer;
mod wire;

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::{Extension, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

pub use wire::{embedding_for, tokenize, word_count, EMBEDDING_DIMS};

/// What the model "says" in reply to chat and generate requests.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `"echo: <last user message>"` (chat) or `"echo: <prompt>"` (generate).
    /// When the request sets `format`, the reply is JSON instead, like a
    /// grammar-constrained model: `{"echo":"<message>"}` for `"json"`, or an
    /// instance built from the schema (every string field holds the message,
    /// numbers are their `minimum` or 0, booleans true, arrays hold
    /// `max(minItems, 1)` items, enums/consts take their first value, every
    /// listed property is present).
    Echo,
    /// Always this text.
    Fixed(String),
    /// This value serialised compactly (for structured-output tests).
    Json(Value),
    /// The n-th chat/generate reply is `replies[n]`; the last one repeats.
    Sequence(Vec<String>),
}

/// What the model does on one turn of a chat that offers `tools`. The turn
/// is chosen by the conversation itself — the number of assistant messages
/// the request carries — so a client that resumes a conversation (after a
/// crash, in another process) gets the same turn again.
#[derive(Clone, Debug, PartialEq)]
pub enum ToolTurn {
    /// Asks for these tool calls, `(name, arguments)`, in this order: one
    /// chunk whose `message.tool_calls` holds them all, as Ollama sends it.
    Call(Vec<(String, Value)>),
    /// Answers with this text (streamed as tokens).
    Answer(String),
}

/// How the server misbehaves. See each variant for the endpoints it affects.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Behavior {
    /// Answer like Ollama.
    #[default]
    Normal,
    /// Every request (health checks included) gets `status` with `body` as
    /// JSON, and a `Retry-After: <secs>` header when `retry_after` is set.
    Fail {
        status: u16,
        body: Value,
        retry_after: Option<u64>,
    },
    /// Every request waits `delay` before the first byte of the response.
    Slow { delay: Duration },
    /// Inference requests (chat/generate/embed): the connection is closed
    /// without a single response byte.
    HangUp,
    /// Inference requests: a couple of valid NDJSON lines, then a line that
    /// is not JSON, then a clean end of body. Non-streaming responses are a
    /// 200 whose body is not valid JSON.
    MalformedStream,
    /// Inference requests: a couple of NDJSON lines, then the connection is
    /// aborted before the `done` record (the chunked body never terminates
    /// cleanly). Non-streaming responses are cut half-way through the JSON.
    CutStream,
    /// The first `n` inference requests after this behavior is set get
    /// `status` with an Ollama-style `{"error": ...}` body; then Normal.
    FailFirst { n: u32, status: u16 },
    /// Inference requests: streaming responses send a couple of chunks and
    /// then the line `{"error":"<message>"}` with status 200, as Ollama does
    /// when generation fails mid-stream; non-streaming ones get
    /// 500 `{"error":"<message>"}`.
    StreamError { message: String },
}

impl Behavior {
    /// `Fail` with the Ollama-style body `{"error": message}` and no
    /// `Retry-After`.
    pub fn fail(status: u16, message: &str) -> Behavior {
        Behavior::Fail {
            status,
            body: serde_json::json!({ "error": message }),
            retry_after: None,
        }
    }
}

/// How to start an [`OllamaDouble`].
#[derive(Clone, Debug)]
pub struct DoubleConfig {
    /// Installed models, e.g. `"llama3.2:latest"`. A request for `llama3.2`
    /// matches `llama3.2:latest` (Ollama adds `:latest`); names compare
    /// case-insensitively. Names containing `llava` or `vision` are vision
    /// models.
    pub models: Vec<String>,
    pub behavior: Behavior,
    /// Pause between streamed chunks; a non-streaming reply takes
    /// `token_delay * tokens` before it is sent.
    pub token_delay: Duration,
    pub reply: Reply,
    /// The turns of chats that carry `tools`; empty: such chats get `reply`.
    /// The n-th assistant turn is `tool_turns[n]`; the last one repeats.
    pub tool_turns: Vec<ToolTurn>,
}

impl Default for DoubleConfig {
    fn default() -> Self {
        DoubleConfig {
            models: vec!["llama3.2:latest".to_string(), "llava:latest".to_string()],
            behavior: Behavior::Normal,
            token_delay: Duration::ZERO,
            reply: Reply::Echo,
            tool_turns: Vec::new(),
        }
    }
}

impl DoubleConfig {
    pub fn with_models<I, S>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.models = models.into_iter().map(Into::into).collect();
        self
    }

    pub fn with_behavior(mut self, behavior: Behavior) -> Self {
        self.behavior = behavior;
        self
    }

    pub fn with_token_delay(mut self, token_delay: Duration) -> Self {
        self.token_delay = token_delay;
        self
    }

    pub fn with_reply(mut self, reply: Reply) -> Self {
        self.reply = reply;
        self
    }

    pub fn with_tool_turns(mut self, turns: Vec<ToolTurn>) -> Self {
        self.tool_turns = turns;
        self
    }
}

/// One request as the double received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The body parsed as JSON; `Null` when empty, a JSON string holding the
    /// raw text when it is not valid JSON.
    pub body: Value,
    pub received_at: Instant,
    /// The request carried images for a model that is not a vision model
    /// (Ollama 0.5 still answers those).
    pub images_to_non_vision: bool,
}

/// A snapshot of what the double has seen.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Every request, whatever the path or outcome.
    pub requests: u64,
    pub chat: u64,
    pub generate: u64,
    /// `/api/embed` and the legacy `/api/embeddings`.
    pub embed: u64,
    pub tags: u64,
    pub version: u64,
    pub show: u64,
    /// Inference requests (chat/generate/embed) being handled right now,
    /// counted until their response body has been produced or dropped.
    pub in_flight: u64,
    pub max_in_flight: u64,
    /// Requests that carried images for a non-vision model.
    pub images_to_non_vision: u64,
    pub request_log: Vec<RecordedRequest>,
}

impl Stats {
    /// Logged requests to `path` (e.g. `"/api/chat"`), oldest first.
    pub fn requests_to<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a RecordedRequest> {
        self.request_log.iter().filter(move |r| r.path == path)
    }

    /// Body of the latest request to `path`.
    pub fn last_body(&self, path: &str) -> Option<&Value> {
        self.request_log
            .iter()
            .rev()
            .find(|r| r.path == path)
            .map(|r| &r.body)
    }
}

pub(crate) struct BehaviorState {
    pub(crate) behavior: Behavior,
    /// Failures already served under the current `FailFirst`.
    pub(crate) failed: u32,
}

pub(crate) struct Shared {
    pub(crate) models: Vec<String>,
    pub(crate) token_delay: Duration,
    pub(crate) reply: Reply,
    pub(crate) tool_turns: Vec<ToolTurn>,
    pub(crate) behavior: Mutex<BehaviorState>,
    pub(crate) stats: Mutex<Stats>,
    pub(crate) reply_seq: AtomicUsize,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Per-connection switch: cancelling it drops the connection at once.
#[derive(Clone)]
pub(crate) struct ConnKill(pub(crate) CancellationToken);

/// A running Ollama double. Dropping it stops the server.
pub struct OllamaDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

impl OllamaDouble {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start(config: DoubleConfig) -> std::io::Result<OllamaDouble> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            models: config.models,
            token_delay: config.token_delay,
            reply: config.reply,
            tool_turns: config.tool_turns,
            behavior: Mutex::new(BehaviorState {
                behavior: config.behavior,
                failed: 0,
            }),
            stats: Mutex::new(Stats::default()),
            reply_seq: AtomicUsize::new(0),
        });
        let router = handlers::router(shared.clone());
        let server = tokio::spawn(serve(listener, router));
        Ok(OllamaDouble {
            addr,
            shared,
            server: Some(server),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Switches behavior for requests arriving from now on (and restarts the
    /// `FailFirst` count).
    pub fn set_behavior(&self, behavior: Behavior) {
        let mut state = lock(&self.shared.behavior);
        state.behavior = behavior;
        state.failed = 0;
    }

    /// Stops accepting and drops every open connection; afterwards
    /// connecting to [`url`](Self::url) is refused.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }
}

impl Drop for OllamaDouble {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

impl std::fmt::Debug for OllamaDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OllamaDouble")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Accept loop. Connections live in a `JoinSet` owned by this future, so
/// aborting the server task also aborts (and closes) every connection.
async fn serve(listener: TcpListener, router: Router) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let kill = CancellationToken::new();
        let service =
            TowerToHyperService::new(router.clone().layer(Extension(ConnKill(kill.clone()))));
        connections.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = kill.cancelled() => {}
            }
        });
    }
}

/// The folder holding the MCP reference servers from the npm registry
/// (`node_modules/@modelcontextprotocol/...`): GLEITZEIT_TEST_MCP_DIR, or
/// installed now by `scripts/mcp-test-servers.sh` (cached).
pub fn mcp_servers_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("GLEITZEIT_TEST_MCP_DIR") {
        return std::path::PathBuf::from(dir);
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/mcp-test-servers.sh"
    );
    let out = std::process::Command::new(script)
        .output()
        .expect("run scripts/mcp-test-servers.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    std::path::PathBuf::from(text.trim().trim_start_matches("MCP_DIR="))
}

/// The most of `times` that fall within any one window of `span`: what a
/// server that counts requests in sliding windows would have seen at worst.
pub fn busiest_window(times: &[std::time::Instant], span: Duration) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end].duration_since(sorted[start]) >= span {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}
