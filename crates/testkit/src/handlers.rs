//! Routes and handlers of the Ollama double.

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::wire::{
    canonical_name, check_base64, context_ids, details, digest_hex, embedding_for, go_json,
    instance_for_schema, is_embedding_model, is_vision, model_facts, now_rfc3339, tokenize,
    word_count, MODIFIED_AT,
};
use crate::{lock, Behavior, ConnKill, RecordedRequest, Reply, Shared, ToolTurn};

const OLLAMA_VERSION: &str = "0.5.7";
const LOAD_DURATION_NS: u64 = 1_843_208;
const GARBAGE: &str = "#!garbage: not json!#";

type St = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/api/version", get(version))
        .route("/api/tags", get(tags))
        .route("/api/ps", get(ps))
        .route("/api/show", post(show))
        .route("/api/chat", post(chat))
        .route("/api/generate", post(generate))
        .route("/api/embed", post(embed))
        .route("/api/embeddings", post(embeddings))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

// ---------------------------------------------------------------- plumbing

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Root,
    Version,
    Tags,
    Ps,
    Show,
    Chat,
    Generate,
    Embed,
    Other,
}

impl Endpoint {
    fn inference(self) -> bool {
        matches!(self, Endpoint::Chat | Endpoint::Generate | Endpoint::Embed)
    }
}

/// How an admitted inference response is to be (mis)delivered.
#[derive(Clone)]
enum Mode {
    Normal,
    Malformed,
    Cut,
    StreamError(String),
}

/// Counts an inference request as in flight until dropped.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> InFlight {
        let mut stats = lock(&shared.stats);
        stats.in_flight += 1;
        stats.max_in_flight = stats.max_in_flight.max(stats.in_flight);
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut stats = lock(&self.0.stats);
        stats.in_flight = stats.in_flight.saturating_sub(1);
    }
}

struct Admitted {
    mode: Mode,
    guard: Option<InFlight>,
    log_index: usize,
    start: Instant,
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn response(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// What gin's `c.JSON` sends.
fn json_response(status: StatusCode, value: &Value) -> Response {
    response(
        status,
        "application/json; charset=utf-8",
        Body::from(go_json(value)),
    )
}

fn error_response(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

fn text_response(status: StatusCode, text: &'static str) -> Response {
    response(status, "text/plain; charset=utf-8", Body::from(text))
}

fn ndjson(value: &Value) -> Bytes {
    let mut line = go_json(value);
    line.push('\n');
    Bytes::from(line)
}

/// Go's `%q` for ordinary strings.
fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn model_not_found(model: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        &format!("model {} not found, try pulling it first", go_quote(model)),
    )
}

fn injected_message(status: u16) -> String {
    match status {
        503 => "server busy, please try again.  maximum pending requests exceeded".to_string(),
        500 => "llama runner process has terminated: signal: killed".to_string(),
        429 => "too many requests".to_string(),
        _ => format!("injected failure (status {status})"),
    }
}

async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

fn body_value(body: &Bytes) -> Value {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// Decodes a request body like gin's `ShouldBindJSON` into Ollama's structs.
fn parse<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, Response> {
    let text = String::from_utf8_lossy(body);
    match text.trim() {
        "" => Err(error_response(
            StatusCode::BAD_REQUEST,
            "missing request body",
        )),
        "null" => Ok(T::default()),
        _ => serde_json::from_slice(body)
            .map_err(|e| error_response(StatusCode::BAD_REQUEST, &e.to_string())),
    }
}

impl Shared {
    fn record(&self, ep: Endpoint, method: &Method, uri: &Uri, body: &Bytes) -> usize {
        let mut stats = lock(&self.stats);
        stats.requests += 1;
        match ep {
            Endpoint::Chat => stats.chat += 1,
            Endpoint::Generate => stats.generate += 1,
            Endpoint::Embed => stats.embed += 1,
            Endpoint::Tags => stats.tags += 1,
            Endpoint::Version => stats.version += 1,
            Endpoint::Show => stats.show += 1,
            Endpoint::Root | Endpoint::Ps | Endpoint::Other => {}
        }
        stats.request_log.push(RecordedRequest {
            method: method.to_string(),
            path: uri.path().to_string(),
            body: body_value(body),
            received_at: Instant::now(),
            images_to_non_vision: false,
        });
        stats.request_log.len() - 1
    }

    fn mark_images_to_non_vision(&self, index: usize) {
        let mut stats = lock(&self.stats);
        stats.images_to_non_vision += 1;
        if let Some(entry) = stats.request_log.get_mut(index) {
            entry.images_to_non_vision = true;
        }
    }

    fn installed(&self, model: &str) -> bool {
        let wanted = canonical_name(model);
        self.models.iter().any(|m| canonical_name(m) == wanted)
    }

    /// Takes one failure from a `FailFirst` budget, if any is left.
    fn take_failure(&self) -> bool {
        let mut state = lock(&self.behavior);
        match state.behavior {
            Behavior::FailFirst { n, .. } if state.failed < n => {
                state.failed += 1;
                true
            }
            _ => false,
        }
    }
}

/// Records the request and applies the current behavior. `Err` is the
/// response to send instead of the real one.
async fn admit(
    shared: &Arc<Shared>,
    ep: Endpoint,
    method: &Method,
    uri: &Uri,
    body: &Bytes,
    kill: Option<&ConnKill>,
) -> Result<Admitted, Response> {
    let start = Instant::now();
    let log_index = shared.record(ep, method, uri, body);
    let guard = ep.inference().then(|| InFlight::enter(shared));
    let behavior = lock(&shared.behavior).behavior.clone();
    let mut mode = Mode::Normal;
    match behavior {
        Behavior::Fail {
            status,
            body,
            retry_after,
        } => {
            let mut r = json_response(status_code(status), &body);
            if let Some(secs) = retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            return Err(r);
        }
        Behavior::Slow { delay } => pause(delay).await,
        _ if !ep.inference() => {}
        Behavior::FailFirst { status, .. } => {
            if shared.take_failure() {
                return Err(error_response(
                    status_code(status),
                    &injected_message(status),
                ));
            }
        }
        Behavior::HangUp => {
            if let Some(kill) = kill {
                // The connection task drops the connection (and this future)
                // as soon as it sees the token; nothing is ever written.
                kill.0.cancel();
                return Err(std::future::pending::<Response>().await);
            }
        }
        Behavior::MalformedStream => mode = Mode::Malformed,
        Behavior::CutStream => mode = Mode::Cut,
        Behavior::StreamError { message } => mode = Mode::StreamError(message),
        Behavior::Normal => {}
    }
    Ok(Admitted {
        mode,
        guard,
        log_index,
        start,
    })
}

// ------------------------------------------------------- request checking

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChatMessage {
    role: Option<String>,
    content: Option<String>,
    images: Option<Vec<String>>,
    tool_calls: Option<Vec<ToolCallIn>>,
    tool_name: Option<String>,
}

/// `api.ToolCall`: `{function: {name, arguments: {…}}}`.
#[derive(Deserialize)]
struct ToolCallIn {
    function: ToolCallFunctionIn,
}

#[derive(Deserialize)]
struct ToolCallFunctionIn {
    name: String,
    arguments: Map<String, Value>,
}

/// `api.Tool`: `{type: "function", function: {name, description, parameters}}`.
#[derive(Deserialize)]
struct ToolIn {
    #[serde(rename = "type")]
    kind: String,
    function: ToolFunctionIn,
}

#[derive(Deserialize)]
struct ToolFunctionIn {
    name: String,
    #[serde(default)]
    parameters: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChatRequest {
    model: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    tools: Option<Vec<ToolIn>>,
    stream: Option<bool>,
    format: Option<Value>,
    options: Option<Map<String, Value>>,
    keep_alive: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GenerateRequest {
    model: Option<String>,
    prompt: Option<String>,
    system: Option<String>,
    template: Option<String>,
    context: Option<Vec<i64>>,
    images: Option<Vec<String>>,
    raw: Option<bool>,
    stream: Option<bool>,
    format: Option<Value>,
    options: Option<Map<String, Value>>,
    keep_alive: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EmbedRequest {
    model: Option<String>,
    input: Option<Value>,
    options: Option<Map<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LegacyEmbeddingsRequest {
    model: Option<String>,
    prompt: Option<String>,
    options: Option<Map<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ShowRequest {
    model: Option<String>,
    name: Option<String>,
}

const INT_OPTIONS: &[&str] = &[
    "num_keep",
    "seed",
    "num_predict",
    "top_k",
    "repeat_last_n",
    "mirostat",
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "num_thread",
];
const FLOAT_OPTIONS: &[&str] = &[
    "temperature",
    "top_p",
    "min_p",
    "typical_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "mirostat_tau",
    "mirostat_eta",
    "tfs_z",
];
const BOOL_OPTIONS: &[&str] = &[
    "penalize_newline",
    "numa",
    "low_vram",
    "f16_kv",
    "vocab_only",
    "use_mmap",
    "use_mlock",
];

/// Ollama's `Options.FromMap` type checks (its errors become a 500).
fn check_options(options: &Map<String, Value>) -> Result<(), String> {
    for (key, value) in options {
        if value.is_null() {
            continue;
        }
        let k = key.as_str();
        if INT_OPTIONS.contains(&k) && !value.is_number() {
            return Err(format!("option {} must be of type integer", go_quote(k)));
        }
        if FLOAT_OPTIONS.contains(&k) && !value.is_number() {
            return Err(format!("option {} must be of type float32", go_quote(k)));
        }
        if BOOL_OPTIONS.contains(&k) && !value.is_boolean() {
            return Err(format!("option {} must be of type boolean", go_quote(k)));
        }
        if k == "stop" {
            let Some(items) = value.as_array() else {
                return Err(format!("option {} must be of type array", go_quote(k)));
            };
            if !items.iter().all(Value::is_string) {
                return Err(format!(
                    "option {} must be of an array of strings",
                    go_quote(k)
                ));
            }
        }
    }
    Ok(())
}

enum Format {
    None,
    Json,
    Schema(Value),
}

fn parse_format(format: Option<&Value>) -> Result<Format, String> {
    match format {
        None => Ok(Format::None),
        Some(Value::String(s)) if s.is_empty() => Ok(Format::None),
        Some(Value::String(s)) if s == "json" => Ok(Format::Json),
        Some(schema @ Value::Object(_)) => Ok(Format::Schema(schema.clone())),
        Some(other) => Err(format!(
            "invalid format: {}; expected \"json\" or a valid JSON Schema object",
            go_quote(&go_json(other))
        )),
    }
}

/// Ollama reports a bad `format` from inside generation: a 500 for
/// non-streaming requests, an `{"error"}` line (status 200) when streaming.
fn generation_error(stream: bool, message: &str) -> Response {
    if stream {
        response(
            StatusCode::OK,
            "application/x-ndjson",
            Body::from(ndjson(&json!({ "error": message }))),
        )
    } else {
        error_response(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

fn zero_keep_alive(keep_alive: Option<&Value>) -> bool {
    match keep_alive {
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => matches!(s.trim(), "0" | "0s" | "0m" | "0h" | "0ms"),
        _ => false,
    }
}

fn check_images<'a>(images: impl IntoIterator<Item = &'a String>) -> Result<bool, Response> {
    let mut any = false;
    for image in images {
        any = true;
        check_base64(image).map_err(|e| error_response(StatusCode::BAD_REQUEST, &e))?;
    }
    Ok(any)
}

// -------------------------------------------------------------- replies

fn reply_text(shared: &Shared, message: &str, format: &Format) -> String {
    match &shared.reply {
        Reply::Echo => match format {
            Format::None => format!("echo: {message}"),
            Format::Json => json!({ "echo": message }).to_string(),
            Format::Schema(schema) => instance_for_schema(schema, message, 0).to_string(),
        },
        Reply::Fixed(text) => text.clone(),
        Reply::Json(value) => value.to_string(),
        Reply::Sequence(replies) => {
            let i = shared.reply_seq.fetch_add(1, Ordering::SeqCst);
            replies
                .get(i.min(replies.len().saturating_sub(1)))
                .cloned()
                .unwrap_or_default()
        }
    }
}

/// Applies `options.stop` and `options.num_predict`; returns the tokens and
/// the `done_reason`.
fn shape(text: &str, options: Option<&Map<String, Value>>) -> (Vec<String>, &'static str) {
    let mut text = text;
    if let Some(stops) = options
        .and_then(|o| o.get("stop"))
        .and_then(Value::as_array)
    {
        let cut = stops
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s))
            .min();
        if let Some(cut) = cut {
            text = &text[..cut];
        }
    }
    let mut tokens = tokenize(text);
    let limit = options
        .and_then(|o| o.get("num_predict"))
        .and_then(Value::as_f64)
        .map(|n| n as i64)
        .unwrap_or(-1);
    if limit > 0 && tokens.len() as u64 > limit as u64 {
        tokens.truncate(limit as usize);
        return (tokens, "length");
    }
    (tokens, "stop")
}

#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Generate,
}

struct Generation {
    kind: Kind,
    model: String,
    tokens: Vec<String>,
    done_reason: &'static str,
    prompt_eval_count: u64,
    /// Words the `context` ids are made of (generate, not raw).
    context: Option<String>,
    start: Instant,
    token_delay: Duration,
    /// The `message.tool_calls` of a chat turn that calls tools; what the
    /// model generated to call them counts towards `eval_count`.
    tool_calls: Option<Value>,
}

impl Generation {
    /// The chunk that carries a turn's tool calls (streaming).
    fn calls_chunk(&self, calls: &Value) -> Value {
        json!({
            "model": self.model,
            "created_at": now_rfc3339(),
            "message": { "role": "assistant", "content": "", "tool_calls": calls },
            "done": false,
        })
    }

    fn chunk(&self, content: &str) -> Value {
        match self.kind {
            Kind::Chat => json!({
                "model": self.model,
                "created_at": now_rfc3339(),
                "message": { "role": "assistant", "content": content },
                "done": false,
            }),
            Kind::Generate => json!({
                "model": self.model,
                "created_at": now_rfc3339(),
                "response": content,
                "done": false,
            }),
        }
    }

    /// The `done: true` record; `content` is empty when streaming.
    fn final_record(&self, content: &str, with_calls: bool) -> Value {
        let mut record = Map::new();
        record.insert("model".into(), json!(self.model));
        record.insert("created_at".into(), json!(now_rfc3339()));
        match self.kind {
            Kind::Chat => {
                let mut message = json!({ "role": "assistant", "content": content });
                // Non-streaming: the calls come with the final message.
                if let (Some(calls), true) = (&self.tool_calls, with_calls) {
                    message["tool_calls"] = calls.clone();
                }
                record.insert("message".into(), message);
                record.insert("done_reason".into(), json!(self.done_reason));
                record.insert("done".into(), json!(true));
            }
            Kind::Generate => {
                record.insert("response".into(), json!(content));
                record.insert("done".into(), json!(true));
                record.insert("done_reason".into(), json!(self.done_reason));
                if let Some(words) = &self.context {
                    let text = format!("{words} {}", self.tokens.concat());
                    let ids = context_ids(&text);
                    if !ids.is_empty() {
                        record.insert("context".into(), json!(ids));
                    }
                }
            }
        }
        let eval_count = self.tokens.len() as u64
            + self
                .tool_calls
                .as_ref()
                .map_or(0, |c| word_count(&c.to_string()));
        let per_token = (self.token_delay.as_nanos() as u64).max(1_000_000);
        let prompt_eval_duration = self.prompt_eval_count * 150_000;
        let eval_duration = eval_count * per_token;
        let total = (self.start.elapsed().as_nanos() as u64)
            .max(LOAD_DURATION_NS + prompt_eval_duration + eval_duration);
        // Go's `omitempty`: zero metrics are left out.
        for (key, value) in [
            ("total_duration", total),
            ("load_duration", LOAD_DURATION_NS),
            ("prompt_eval_count", self.prompt_eval_count),
            ("prompt_eval_duration", prompt_eval_duration),
            ("eval_count", eval_count),
            ("eval_duration", eval_duration),
        ] {
            if value > 0 {
                record.insert(key.into(), json!(value));
            }
        }
        Value::Object(record)
    }

    fn garbage_line(&self) -> Bytes {
        let field = match self.kind {
            Kind::Chat => "\"message\":{\"role\":\"assistant\",\"content\":\"",
            Kind::Generate => "\"response\":\"",
        };
        Bytes::from(format!(
            "{{\"model\":{},{field}{GARBAGE}\n",
            go_quote(&self.model)
        ))
    }
}

/// The response a model load (empty prompt) or unload (keep_alive 0) gets.
fn load_response(kind: Kind, model: &str, reason: &str) -> Response {
    let value = match kind {
        Kind::Chat => json!({
            "model": model,
            "created_at": now_rfc3339(),
            "message": { "role": "assistant", "content": "" },
            "done_reason": reason,
            "done": true,
        }),
        Kind::Generate => json!({
            "model": model,
            "created_at": now_rfc3339(),
            "response": "",
            "done": true,
            "done_reason": reason,
        }),
    };
    json_response(StatusCode::OK, &value)
}

/// A complete JSON body delivered according to `mode` (non-streaming
/// responses and `/api/embed`).
fn deliver_json(value: &Value, mode: Mode) -> Response {
    let text = go_json(value);
    let mut half = text.len() / 2;
    while !text.is_char_boundary(half) {
        half -= 1;
    }
    match mode {
        Mode::Normal => response(
            StatusCode::OK,
            "application/json; charset=utf-8",
            Body::from(text),
        ),
        Mode::Malformed => response(
            StatusCode::OK,
            "application/json; charset=utf-8",
            Body::from(format!("{}{GARBAGE}", &text[..half])),
        ),
        Mode::Cut => {
            let head = Bytes::from(text[..half].to_string());
            let body = async_stream::stream! {
                yield Ok::<Bytes, io::Error>(head);
                tokio::time::sleep(Duration::from_millis(20)).await;
                yield Err(io::Error::new(io::ErrorKind::ConnectionReset, "cut by the double"));
            };
            response(
                StatusCode::OK,
                "application/json; charset=utf-8",
                Body::from_stream(body),
            )
        }
        Mode::StreamError(message) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &message),
    }
}

async fn respond_generation(
    generation: Generation,
    stream: bool,
    mode: Mode,
    guard: Option<InFlight>,
) -> Response {
    if !stream {
        // A non-streaming reply takes as long as streaming it would.
        let tokens = u32::try_from(generation.tokens.len()).unwrap_or(u32::MAX);
        pause(generation.token_delay.saturating_mul(tokens)).await;
        let value = generation.final_record(&generation.tokens.concat(), true);
        let response = deliver_json(&value, mode);
        drop(guard);
        return response;
    }
    let body = async_stream::stream! {
        let _guard = guard;
        let g = generation;
        let delay = g.token_delay;
        let n = g.tokens.len();
        let head = match mode {
            Mode::Normal => n,
            _ => n.min(2),
        };
        for (i, token) in g.tokens.iter().take(head).enumerate() {
            if i > 0 {
                pause(delay).await;
            }
            yield Ok::<Bytes, io::Error>(ndjson(&g.chunk(token)));
        }
        if head > 0 {
            pause(delay).await;
        }
        if let (Some(calls), Mode::Normal) = (&g.tool_calls, &mode) {
            yield Ok(ndjson(&g.calls_chunk(calls)));
            pause(delay).await;
        }
        match mode {
            Mode::Normal => yield Ok(ndjson(&g.final_record("", false))),
            Mode::Malformed => yield Ok(g.garbage_line()),
            Mode::Cut => {
                // Let the chunks reach the socket, then abort the body: hyper
                // drops the connection without the terminating chunk.
                tokio::time::sleep(Duration::from_millis(20)).await;
                yield Err(io::Error::new(io::ErrorKind::ConnectionReset, "cut by the double"));
            }
            Mode::StreamError(message) => yield Ok(ndjson(&json!({ "error": message }))),
        }
    };
    response(
        StatusCode::OK,
        "application/x-ndjson",
        Body::from_stream(body),
    )
}

// ------------------------------------------------------------- handlers

async fn root(State(s): St, method: Method, uri: Uri, body: Bytes) -> Response {
    if let Err(r) = admit(&s, Endpoint::Root, &method, &uri, &body, None).await {
        return r;
    }
    text_response(StatusCode::OK, "Ollama is running")
}

async fn not_found(State(s): St, method: Method, uri: Uri, body: Bytes) -> Response {
    if let Err(r) = admit(&s, Endpoint::Other, &method, &uri, &body, None).await {
        return r;
    }
    text_response(StatusCode::NOT_FOUND, "404 page not found")
}

async fn version(State(s): St, method: Method, uri: Uri, body: Bytes) -> Response {
    if let Err(r) = admit(&s, Endpoint::Version, &method, &uri, &body, None).await {
        return r;
    }
    json_response(StatusCode::OK, &json!({ "version": OLLAMA_VERSION }))
}

fn model_entry(name: &str) -> Map<String, Value> {
    let facts = model_facts(name);
    let mut entry = Map::new();
    entry.insert("name".into(), json!(name));
    entry.insert("model".into(), json!(name));
    entry.insert("size".into(), json!(facts.size));
    entry.insert("digest".into(), json!(digest_hex(name)));
    entry.insert("details".into(), details(name));
    entry
}

async fn tags(State(s): St, method: Method, uri: Uri, body: Bytes) -> Response {
    if let Err(r) = admit(&s, Endpoint::Tags, &method, &uri, &body, None).await {
        return r;
    }
    let models: Vec<Value> = s
        .models
        .iter()
        .map(|name| {
            let facts = model_facts(name);
            json!({
                "name": name,
                "model": name,
                "modified_at": MODIFIED_AT,
                "size": facts.size,
                "digest": digest_hex(name),
                "details": details(name),
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "models": models }))
}

/// Models that served an inference request count as loaded.
async fn ps(State(s): St, method: Method, uri: Uri, body: Bytes) -> Response {
    if let Err(r) = admit(&s, Endpoint::Ps, &method, &uri, &body, None).await {
        return r;
    }
    let used: BTreeSet<String> = {
        let stats = lock(&s.stats);
        stats
            .request_log
            .iter()
            .filter(|r| {
                matches!(
                    r.path.as_str(),
                    "/api/chat" | "/api/generate" | "/api/embed" | "/api/embeddings"
                )
            })
            .filter_map(|r| r.body.get("model").and_then(Value::as_str))
            .map(canonical_name)
            .collect()
    };
    let expires_at = (chrono::Utc::now() + chrono::Duration::minutes(5))
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let models: Vec<Value> = s
        .models
        .iter()
        .filter(|m| used.contains(&canonical_name(m)))
        .map(|name| {
            let mut entry = model_entry(name);
            let size = model_facts(name).size;
            entry.insert("expires_at".into(), json!(expires_at));
            entry.insert("size_vram".into(), json!(size));
            Value::Object(entry)
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "models": models }))
}

async fn show(State(s): St, method: Method, uri: Uri, body: Bytes) -> Response {
    if let Err(r) = admit(&s, Endpoint::Show, &method, &uri, &body, None).await {
        return r;
    }
    let req: ShowRequest = match parse(&body) {
        Ok(req) => req,
        Err(r) => return r,
    };
    let model = req.model.or(req.name).unwrap_or_default();
    if model.trim().is_empty() {
        return error_response(StatusCode::BAD_REQUEST, "model is required");
    }
    let Some(name) = s
        .models
        .iter()
        .find(|m| canonical_name(m) == canonical_name(&model))
    else {
        return error_response(StatusCode::NOT_FOUND, &format!("model '{model}' not found"));
    };
    let facts = model_facts(name);
    let mut capabilities = vec![];
    if is_embedding_model(name) {
        capabilities.push("embedding");
    } else {
        capabilities.push("completion");
    }
    if is_vision(name) {
        capabilities.push("vision");
    }
    let digest = digest_hex(name);
    let arch = facts.family;
    let mut model_info = Map::new();
    model_info.insert("general.architecture".into(), json!(arch));
    model_info.insert(
        "general.parameter_count".into(),
        json!(facts.parameter_count),
    );
    model_info.insert(
        format!("{arch}.context_length"),
        json!(facts.context_length),
    );
    model_info.insert(
        format!("{arch}.embedding_length"),
        json!(facts.embedding_length),
    );
    let value = json!({
        "modelfile": format!(
            "# Modelfile generated by \"ollama show\"\n# To build a new Modelfile based on this, replace FROM with:\n# FROM {name}\n\nFROM /root/.ollama/models/blobs/sha256-{digest}\nTEMPLATE \"{{{{ .Prompt }}}}\"\n"
        ),
        "parameters": "stop                           \"<|eot_id|>\"",
        "template": "{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}",
        "details": details(name),
        "model_info": model_info,
        "modified_at": MODIFIED_AT,
        "capabilities": capabilities,
    });
    json_response(StatusCode::OK, &value)
}

async fn chat(
    State(s): St,
    Extension(kill): Extension<ConnKill>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let adm = match admit(&s, Endpoint::Chat, &method, &uri, &body, Some(&kill)).await {
        Ok(adm) => adm,
        Err(r) => return r,
    };
    let req: ChatRequest = match parse(&body) {
        Ok(req) => req,
        Err(r) => return r,
    };
    let messages = req.messages.unwrap_or_default();
    let has_images = match check_images(messages.iter().flat_map(|m| m.images.iter().flatten())) {
        Ok(any) => any,
        Err(r) => return r,
    };
    let model = req.model.unwrap_or_default();
    if model.trim().is_empty() {
        return error_response(StatusCode::BAD_REQUEST, "model is required");
    }
    if !s.installed(&model) {
        return model_not_found(&model);
    }
    if let Some(Err(e)) = req.options.as_ref().map(check_options) {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, &e);
    }
    if messages.is_empty() {
        let reason = if zero_keep_alive(req.keep_alive.as_ref()) {
            "unload"
        } else {
            "load"
        };
        return load_response(Kind::Chat, &model, reason);
    }
    let stream = req.stream.unwrap_or(true);
    let format = match parse_format(req.format.as_ref()) {
        Ok(format) => format,
        Err(e) => return generation_error(stream, &e),
    };
    if has_images && !is_vision(&model) {
        s.mark_images_to_non_vision(adm.log_index);
    }
    let tools = req.tools.unwrap_or_default();
    if let Some(bad) = tools.iter().find(|t| t.kind != "function") {
        return error_response(
            StatusCode::BAD_REQUEST,
            &format!("invalid tool type: {}", go_quote(&bad.kind)),
        );
    }
    if let Some(bad) = tools.iter().find(|t| {
        t.function
            .parameters
            .as_ref()
            .is_some_and(|p| !p.is_object())
    }) {
        return error_response(
            StatusCode::BAD_REQUEST,
            &format!(
                "json: cannot unmarshal parameters of tool {}",
                go_quote(&bad.function.name)
            ),
        );
    }
    let content = |m: &ChatMessage| m.content.clone().unwrap_or_default();
    // Tool calls and tool names are part of the prompt the model reads.
    let prompt_eval_count = messages
        .iter()
        .map(|m| {
            word_count(&content(m))
                + m.tool_name.as_deref().map_or(0, word_count)
                + m.tool_calls
                    .iter()
                    .flatten()
                    .map(|c| {
                        word_count(&c.function.name)
                            + word_count(&Value::Object(c.function.arguments.clone()).to_string())
                    })
                    .sum::<u64>()
        })
        .sum();
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.role.as_deref() == Some("user"))
        .or(messages.last())
        .map(content)
        .unwrap_or_default();
    let turn = (!tools.is_empty() && !s.tool_turns.is_empty()).then(|| {
        let n = messages
            .iter()
            .filter(|m| m.role.as_deref() == Some("assistant"))
            .count();
        &s.tool_turns[n.min(s.tool_turns.len() - 1)]
    });
    let (text, tool_calls) = match turn {
        Some(ToolTurn::Call(calls)) => {
            let calls: Vec<Value> = calls
                .iter()
                .map(
                    |(name, arguments)| json!({"function": {"name": name, "arguments": arguments}}),
                )
                .collect();
            (String::new(), Some(Value::Array(calls)))
        }
        Some(ToolTurn::Answer(text)) => (text.clone(), None),
        None => (reply_text(&s, &last_user, &format), None),
    };
    let (tokens, done_reason) = shape(&text, req.options.as_ref());
    let generation = Generation {
        kind: Kind::Chat,
        model,
        tokens,
        done_reason,
        prompt_eval_count,
        context: None,
        start: adm.start,
        token_delay: s.token_delay,
        tool_calls,
    };
    respond_generation(generation, stream, adm.mode, adm.guard).await
}

async fn generate(
    State(s): St,
    Extension(kill): Extension<ConnKill>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let adm = match admit(&s, Endpoint::Generate, &method, &uri, &body, Some(&kill)).await {
        Ok(adm) => adm,
        Err(r) => return r,
    };
    let req: GenerateRequest = match parse(&body) {
        Ok(req) => req,
        Err(r) => return r,
    };
    let has_images = match check_images(req.images.iter().flatten()) {
        Ok(any) => any,
        Err(r) => return r,
    };
    let raw = req.raw.unwrap_or(false);
    let system = req.system.unwrap_or_default();
    if raw
        && (!req.template.unwrap_or_default().is_empty()
            || !system.is_empty()
            || !req.context.unwrap_or_default().is_empty())
    {
        return error_response(
            StatusCode::BAD_REQUEST,
            "raw mode does not support template, system, or context",
        );
    }
    let model = req.model.unwrap_or_default();
    if model.trim().is_empty() {
        // Ollama's wording for an invalid (here: empty) name on generate.
        return error_response(StatusCode::NOT_FOUND, &format!("model '{model}' not found"));
    }
    if !s.installed(&model) {
        return model_not_found(&model);
    }
    if let Some(Err(e)) = req.options.as_ref().map(check_options) {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, &e);
    }
    let prompt = req.prompt.unwrap_or_default();
    if prompt.is_empty() && !has_images {
        let reason = if zero_keep_alive(req.keep_alive.as_ref()) {
            "unload"
        } else {
            "load"
        };
        return load_response(Kind::Generate, &model, reason);
    }
    let stream = req.stream.unwrap_or(true);
    let format = match parse_format(req.format.as_ref()) {
        Ok(format) => format,
        Err(e) => return generation_error(stream, &e),
    };
    if has_images && !is_vision(&model) {
        s.mark_images_to_non_vision(adm.log_index);
    }
    let prompt_eval_count = word_count(&system) + word_count(&prompt);
    let text = reply_text(&s, &prompt, &format);
    let (tokens, done_reason) = shape(&text, req.options.as_ref());
    let generation = Generation {
        kind: Kind::Generate,
        model,
        tokens,
        done_reason,
        prompt_eval_count,
        context: (!raw).then(|| format!("{system} {prompt}")),
        start: adm.start,
        token_delay: s.token_delay,
        tool_calls: None,
    };
    respond_generation(generation, stream, adm.mode, adm.guard).await
}

async fn embed(
    State(s): St,
    Extension(kill): Extension<ConnKill>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let adm = match admit(&s, Endpoint::Embed, &method, &uri, &body, Some(&kill)).await {
        Ok(adm) => adm,
        Err(r) => return r,
    };
    let req: EmbedRequest = match parse(&body) {
        Ok(req) => req,
        Err(r) => return r,
    };
    let mut inputs: Vec<String> = Vec::new();
    match req.input {
        None => {}
        Some(Value::String(text)) if !text.is_empty() => inputs.push(text),
        Some(Value::String(_)) => {}
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(text) => inputs.push(text),
                    _ => return error_response(StatusCode::BAD_REQUEST, "invalid input type"),
                }
            }
        }
        Some(_) => return error_response(StatusCode::BAD_REQUEST, "invalid input type"),
    }
    let model = req.model.unwrap_or_default();
    if !s.installed(&model) {
        return model_not_found(&model);
    }
    if let Some(Err(e)) = req.options.as_ref().map(check_options) {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, &e);
    }
    if inputs.is_empty() {
        return json_response(StatusCode::OK, &json!({ "model": model, "embeddings": [] }));
    }
    // Go marshals `[][]float32` with float32 precision (0.11715492, not
    // 0.11715491861104965): go through the shortest f32 decimal.
    let embeddings: Vec<Value> = inputs
        .iter()
        .map(|t| {
            let v = embedding_for(t);
            Value::Array(
                v.iter()
                    .map(|x| {
                        x.to_string()
                            .parse::<f64>()
                            .map_or(Value::Null, Value::from)
                    })
                    .collect(),
            )
        })
        .collect();
    let prompt_eval_count: u64 = inputs.iter().map(|t| word_count(t)).sum();
    let mut value = Map::new();
    value.insert("model".into(), json!(model));
    value.insert("embeddings".into(), json!(embeddings));
    let elapsed = adm.start.elapsed().as_nanos() as u64;
    value.insert(
        "total_duration".into(),
        json!(elapsed.max(LOAD_DURATION_NS + 1)),
    );
    value.insert("load_duration".into(), json!(LOAD_DURATION_NS));
    if prompt_eval_count > 0 {
        value.insert("prompt_eval_count".into(), json!(prompt_eval_count));
    }
    let response = deliver_json(&Value::Object(value), adm.mode);
    drop(adm.guard);
    response
}

/// The pre-0.3 single-text endpoint: `{"model","prompt"}` → `{"embedding"}`.
async fn embeddings(
    State(s): St,
    Extension(kill): Extension<ConnKill>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let adm = match admit(&s, Endpoint::Embed, &method, &uri, &body, Some(&kill)).await {
        Ok(adm) => adm,
        Err(r) => return r,
    };
    let req: LegacyEmbeddingsRequest = match parse(&body) {
        Ok(req) => req,
        Err(r) => return r,
    };
    let model = req.model.unwrap_or_default();
    if !s.installed(&model) {
        return model_not_found(&model);
    }
    if let Some(Err(e)) = req.options.as_ref().map(check_options) {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, &e);
    }
    let prompt = req.prompt.unwrap_or_default();
    let embedding: Vec<f64> = if prompt.is_empty() {
        Vec::new()
    } else {
        embedding_for(&prompt).into_iter().map(f64::from).collect()
    };
    let response = deliver_json(&json!({ "embedding": embedding }), adm.mode);
    drop(adm.guard);
    response
}
