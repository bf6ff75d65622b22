//! `llm/chat`, `llm/generate`, `llm/vision`, `llm/embed` against a fleet of
//! Ollama and OpenAI-compatible endpoints.
//!
//! A call resolves the model (aliases, fallbacks), picks an endpoint by strategy,
//! streams the reply (tokens go to the call's event sink as they arrive) and fails
//! over to the next eligible endpoint on errors that say nothing about the
//! request itself. With `format`, the reply is parsed and validated against the
//! schema; an invalid reply is a retryable GZ2013.

pub mod config;
mod files;
mod fleet;
mod images;
pub mod limits;
pub mod wire;

pub use config::{Dialect, EndpointConfig, LlmConfig, Price, Strategy};
pub use fleet::{Circuit, EndpointStatus};

use crate::{CallContext, MethodInfo, Provider, ProviderEvent};
use async_trait::async_trait;
use fleet::{transport_error, Fleet, Lease};
use futures_util::StreamExt;
use gleitzeit_core::{ErrorCode, GzError};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use wire::{Format, LlmRequest, Message, Operation, Options, Piece, ToolCall, ToolCallAssembler};

pub struct LlmProvider {
    fleet: Arc<Fleet>,
    config: LlmConfig,
    health: std::sync::Mutex<Option<CancellationToken>>,
}

/// What one successful attempt produced.
struct Reply {
    text: String,
    model: Option<String>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    finish_reason: Option<String>,
    first_token_ms: Option<u64>,
    embeddings: Option<Vec<Value>>,
    tool_calls: Vec<ToolCall>,
}

/// An endpoint on this machine or the local network: running it costs no
/// per-token fee.
fn is_local(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
    .trim_start_matches('[')
    .trim_end_matches(']');
    if host == "localhost" || host.ends_with(".local") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        Ok(std::net::IpAddr::V6(ip)) => ip.is_loopback(),
        Err(_) => false,
    }
}

/// 429s (or Retry-Afters) a call waits out itself before failing.
const MAX_COOL_DOWNS: u32 = 3;
/// The longest Retry-After a call waits out itself.
const MAX_COOL_DOWN: Duration = Duration::from_secs(60);

/// Waits for a rate limit or a Retry-After, unless the task is cancelled.
async fn pause(wait: Duration, ctx: &CallContext) -> Result<(), GzError> {
    tokio::select! {
        _ = tokio::time::sleep(wait) => Ok(()),
        _ = ctx.cancel.cancelled() => Err(GzError::new(ErrorCode::TaskCancelled, "cancelled while waiting for a rate limit")),
    }
}

fn invalid(message: impl Into<String>) -> GzError {
    GzError::new(ErrorCode::InvalidParameters, message)
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items.iter().map(text_of).collect(),
        _ => vec![],
    }
}

impl LlmProvider {
    pub fn new(config: LlmConfig, ollama_host: Option<&str>) -> Result<LlmProvider, GzError> {
        for (model, price) in &config.prices {
            if !(price.input.is_finite()
                && price.input >= 0.0
                && price.output.is_finite()
                && price.output >= 0.0)
            {
                return Err(GzError::new(
                    ErrorCode::ConfigInvalid,
                    format!("llm.prices.{model}: prices must be numbers of USD per million tokens, 0 or more"),
                ));
            }
        }
        // A price for a model no endpoint says it serves is probably a typo;
        // its calls would show an unknown cost.
        let endpoints = config.effective_endpoints(ollama_host);
        if endpoints.iter().all(|e| !e.models.is_empty()) {
            for model in config.prices.keys() {
                let served = endpoints
                    .iter()
                    .any(|e| e.models.iter().any(|m| wire::model_matches(m, model)))
                    || config.models.contains_key(model);
                if !served {
                    tracing::warn!(
                        "llm.prices names `{model}`, which no endpoint lists among its models"
                    );
                }
            }
        }
        Ok(LlmProvider {
            fleet: Arc::new(Fleet::new(&config, ollama_host)?),
            config,
            health: std::sync::Mutex::new(None),
        })
    }

    /// Endpoint state for `providers list|health`.
    /// Rate limits count in `shared` (every worker node's calls) from now on.
    pub fn share_limits(&self, shared: Arc<dyn limits::SharedLimits>) {
        self.fleet.share_limits(shared);
    }

    pub fn status(&self) -> Vec<EndpointStatus> {
        self.fleet.status()
    }

    /// Checks every endpoint now (reachability, models).
    pub async fn check_all(&self) -> Vec<EndpointStatus> {
        let checks = (0..self.fleet.endpoints.len()).map(|i| self.fleet.check(i));
        futures_util::future::join_all(checks).await;
        self.fleet.status()
    }

    fn start_health_checks(&self) {
        let interval = LlmConfig::secs(self.config.health_interval_secs);
        if interval.is_zero() {
            return;
        }
        let mut guard = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_some() {
            return;
        }
        let stop = CancellationToken::new();
        *guard = Some(stop.clone());
        let fleet = self.fleet.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = ticker.tick() => {
                        let checks = (0..fleet.endpoints.len()).map(|i| fleet.check(i));
                        futures_util::future::join_all(checks).await;
                    }
                }
            }
        });
    }

    fn build_request(
        &self,
        method: &str,
        params: &Value,
        files: &gleitzeit_functions::FileGuard,
    ) -> Result<(LlmRequest, Vec<String>, Vec<String>), GzError> {
        let Some(map) = params.as_object() else {
            return Err(invalid("llm parameters must be a mapping"));
        };
        let model = map
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(|| {
                invalid(format!("{method} needs `model`")).with_hint(
                    "Set `model:` on the task or `defaults: {model: …}` on the workflow.",
                )
            })?
            .to_string();
        let op = match method {
            "llm/chat" | "llm/vision" => Operation::Chat,
            AGENT => {
                return Err(invalid(
                    "llm/agent runs in the workflow runtime, not as a single LLM call",
                ))
            }
            "llm/generate" => Operation::Generate,
            "llm/embed" => Operation::Embed,
            other => {
                return Err(GzError::new(
                    ErrorCode::ProviderUnavailable,
                    format!("unknown llm method `{other}`"),
                ))
            }
        };
        let max_bytes = (self.config.max_image_mb.max(0.0) * 1024.0 * 1024.0) as usize;
        let mut images = Vec::new();
        for key in ["images", "image", "image_path", "image_paths"] {
            for item in string_list(map.get(key)) {
                images.push(images::load(files, &item, max_bytes)?);
            }
        }
        let mut messages = Vec::new();
        if let Some(list) = map.get("messages") {
            let Some(list) = list.as_array() else {
                return Err(invalid("`messages` must be a list of {role, content}"));
            };
            for (i, m) in list.iter().enumerate() {
                let role = m
                    .get("role")
                    .and_then(Value::as_str)
                    .unwrap_or("user")
                    .to_string();
                let tool_calls = match m.get("tool_calls") {
                    None | Some(Value::Null) => vec![],
                    Some(calls) => serde_json::from_value::<Vec<ToolCall>>(calls.clone())
                        .map_err(|e| {
                            invalid(format!(
                                "messages[{i}].tool_calls must be a list of {{id, name, arguments}}: {e}"
                            ))
                        })?,
                };
                let content = match m.get("content") {
                    Some(Value::Null) | None if !tool_calls.is_empty() => String::new(),
                    other => other
                        .map(text_of)
                        .ok_or_else(|| invalid(format!("messages[{i}] has no `content`")))?,
                };
                let mut message_images = Vec::new();
                for item in string_list(m.get("images")) {
                    message_images.push(images::load(files, &item, max_bytes)?);
                }
                let text_field = |key: &str| m.get(key).and_then(Value::as_str).map(str::to_string);
                messages.push(Message {
                    role,
                    content,
                    images: message_images,
                    tool_calls,
                    tool_call_id: text_field("tool_call_id"),
                    tool_name: text_field("tool_name").or_else(|| text_field("name")),
                });
            }
        }
        let mut prompt = map.get("prompt").map(text_of);
        let mut attached = Vec::new();
        for key in ["files", "file"] {
            for path in string_list(map.get(key)) {
                let content = files::load(files, &path)?;
                attached.push((path, content));
            }
        }
        if !attached.is_empty() {
            if op == Operation::Embed {
                return Err(invalid("llm/embed takes `text`, not `files`"));
            }
            prompt = Some(files::append(prompt.as_deref(), &attached));
        }
        let system = map.get("system").map(text_of);
        if let (Some(system), Operation::Chat) = (&system, op) {
            if !messages.iter().any(|m| m.role == "system") {
                messages.insert(
                    0,
                    Message {
                        role: "system".into(),
                        content: system.clone(),
                        ..Message::default()
                    },
                );
            }
        }
        if op == Operation::Chat {
            if let Some(prompt) = &prompt {
                messages.push(Message {
                    role: "user".into(),
                    content: prompt.clone(),
                    ..Message::default()
                });
            }
            if messages.iter().all(|m| m.role == "system") {
                return Err(invalid(format!("{method} needs `messages` or `prompt`")));
            }
        }
        if op == Operation::Generate && prompt.is_none() {
            return Err(invalid("llm/generate needs `prompt`"));
        }
        if method == "llm/vision"
            && images.is_empty()
            && messages.iter().all(|m| m.images.is_empty())
        {
            return Err(invalid("llm/vision needs `images` (file paths or base64)"));
        }
        let input = if op == Operation::Embed {
            let texts = string_list(
                map.get("input")
                    .or_else(|| map.get("text"))
                    .or_else(|| map.get("texts")),
            );
            if texts.is_empty() {
                return Err(invalid(
                    "llm/embed needs `text` or `input` (a string or a list)",
                ));
            }
            texts
        } else {
            vec![]
        };
        let number = |key: &str| map.get(key).and_then(Value::as_f64);
        let options = Options {
            temperature: number("temperature"),
            max_tokens: map
                .get("max_tokens")
                .or_else(|| map.get("num_predict"))
                .and_then(Value::as_u64)
                .or(self.config.default_max_tokens),
            top_p: number("top_p"),
            stop: string_list(map.get("stop")),
            seed: map.get("seed").and_then(Value::as_i64),
        };
        let format = match map.get("format").or_else(|| map.get("schema")) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s == "json" => Some(Format::Json),
            Some(Value::Object(schema)) => {
                jsonschema::validator_for(&Value::Object(schema.clone()))
                    .map_err(|e| invalid(format!("`format` is not a valid JSON Schema: {e}")))?;
                Some(Format::Schema(Value::Object(schema.clone())))
            }
            Some(other) => {
                return Err(invalid(format!(
                    "`format` must be \"json\" or a JSON Schema object, not {other}"
                )))
            }
        };
        let mut models = self.config.candidates(&model);
        for fallback in string_list(map.get("fallback_models")) {
            models.extend(self.config.candidates(&fallback));
        }
        let tags = string_list(map.get("tags"));
        let tools = match map.get("tools") {
            None | Some(Value::Null) => vec![],
            Some(_) if op != Operation::Chat => {
                return Err(invalid(format!("{method} takes no `tools`; use llm/chat")))
            }
            Some(Value::Array(tools)) => tools
                .iter()
                .enumerate()
                .map(|(i, t)| tool_definition(i, t))
                .collect::<Result<Vec<_>, _>>()?,
            Some(other) => {
                return Err(invalid(format!(
                    "`tools` must be a list of function definitions, not {other}"
                )))
            }
        };
        let parallel_tool_calls = map.get("parallel_tool_calls").and_then(Value::as_bool);
        Ok((
            LlmRequest {
                op,
                model,
                messages,
                prompt,
                system,
                images,
                options,
                format,
                input,
                tools,
                parallel_tool_calls,
            },
            models,
            tags,
        ))
    }

    async fn attempt(
        &self,
        lease: &Lease,
        dialect: Dialect,
        request: &LlmRequest,
        ctx: &CallContext,
    ) -> Result<Reply, GzError> {
        let endpoint = &self.fleet.endpoints[lease.index];
        let url = format!("{}{}", endpoint.config.url, wire::path(dialect, request.op));
        let body = wire::body(dialect, request);
        let started = Instant::now();
        let response = fleet::send(&self.fleet, |client| {
            let http = client.post(&url).json(&body);
            match endpoint.api_key() {
                Some(key) => http.bearer_auth(key),
                None => http,
            }
        })
        .await
        .map_err(|e| transport_error(endpoint, &e))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let body = response.text().await.unwrap_or_default();
            return Err(http_error(
                &endpoint.config.name,
                &request.model,
                status.as_u16(),
                &body,
                retry_after,
            ));
        }
        let name = endpoint.config.name.as_str();
        if request.op == Operation::Embed {
            let value: Value = response.json().await.map_err(|e| {
                GzError::new(
                    ErrorCode::LlmRequestFailed,
                    format!("endpoint `{name}`: embedding reply is not JSON: {e}"),
                )
                .at(name)
            })?;
            let (vectors, tokens) = wire::decode_embeddings(dialect, &value, name)?;
            return Ok(Reply {
                text: String::new(),
                model: value
                    .get("model")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                prompt_tokens: tokens,
                completion_tokens: None,
                finish_reason: None,
                first_token_ms: None,
                embeddings: Some(vectors),
                tool_calls: vec![],
            });
        }
        let idle =
            LlmConfig::secs(self.config.stream_idle_timeout_secs).max(Duration::from_millis(100));
        let mut stream = response.bytes_stream();
        let mut buffer: Vec<u8> = Vec::new();
        let mut reply = Reply {
            text: String::new(),
            model: None,
            prompt_tokens: None,
            completion_tokens: None,
            finish_reason: None,
            first_token_ms: None,
            embeddings: None,
            tool_calls: vec![],
        };
        let mut calls = ToolCallAssembler::default();
        let mut done = false;
        let mut finished = false;
        loop {
            let next = tokio::time::timeout(idle, stream.next())
                .await
                .map_err(|_| {
                    GzError::new(
                        ErrorCode::NetworkTimeout,
                        format!(
                            "endpoint `{name}` sent nothing for {:.0} s in the middle of a reply",
                            idle.as_secs_f64()
                        ),
                    )
                    .at(name)
                })?;
            let chunk = match next {
                None => break,
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    return Err(GzError::new(
                        ErrorCode::LlmRequestFailed,
                        format!(
                            "endpoint `{name}`: the reply stream broke off: {}",
                            transport_error(endpoint, &e).message
                        ),
                    )
                    .at(name)
                    .retryable(true))
                }
            };
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                for piece in wire::decode_line(dialect, &line, name, &mut done)? {
                    match piece {
                        Piece::Token(text) => {
                            if reply.first_token_ms.is_none() {
                                reply.first_token_ms = Some(started.elapsed().as_millis() as u64);
                            }
                            if let Some(sink) = &ctx.events {
                                sink(ProviderEvent::Token { text: text.clone() });
                            }
                            reply.text.push_str(&text);
                        }
                        Piece::Done {
                            prompt_tokens,
                            completion_tokens,
                            finish_reason,
                            model,
                        } => {
                            finished = true;
                            reply.prompt_tokens = prompt_tokens.or(reply.prompt_tokens);
                            reply.completion_tokens = completion_tokens.or(reply.completion_tokens);
                            reply.finish_reason = finish_reason;
                            reply.model = model.or(reply.model.take());
                        }
                        Piece::Usage {
                            prompt_tokens,
                            completion_tokens,
                        } => {
                            reply.prompt_tokens = prompt_tokens.or(reply.prompt_tokens);
                            reply.completion_tokens = completion_tokens.or(reply.completion_tokens);
                        }
                        Piece::ToolCall {
                            index,
                            id,
                            name,
                            arguments,
                        } => calls.add(index, id, name, arguments),
                    }
                }
            }
        }
        if !buffer.is_empty() {
            let line = String::from_utf8_lossy(&buffer).into_owned();
            for piece in wire::decode_line(dialect, &line, name, &mut done)? {
                if let Piece::Done { .. } = piece {
                    finished = true;
                }
            }
        }
        if !(finished || done) {
            return Err(GzError::new(
                ErrorCode::LlmRequestFailed,
                format!("endpoint `{name}`: the reply stream ended before its final record"),
            )
            .at(name)
            .retryable(true));
        }
        reply.tool_calls = calls.finish(name)?;
        Ok(reply)
    }

    /// Tries models in order, and endpoints for each model, until one answers.
    async fn complete(
        &self,
        method: &str,
        params: &Value,
        ctx: &CallContext,
    ) -> Result<Value, GzError> {
        let (template, models, tags) = self.build_request(method, params, &ctx.files)?;
        let chars = template
            .messages
            .iter()
            .map(|m| m.content.len())
            .sum::<usize>()
            + template.prompt.as_ref().map_or(0, String::len)
            + template.system.as_ref().map_or(0, String::len)
            + template.input.iter().map(String::len).sum::<usize>();
        let estimate = limits::estimate_tokens(chars, template.options.max_tokens);
        let started = Instant::now();
        let mut failovers = 0u32;
        let mut last_error: Option<GzError> = None;
        let mut missing_everywhere = Vec::new();
        // Waits for endpoints that said 429/Retry-After; past a few (or a long
        // one) the error goes to the task's retry policy instead.
        let mut cooled = 0u32;
        for model in &models {
            let mut tried: Vec<usize> = Vec::new();
            loop {
                let order = self.fleet.eligible(model, &tags, &tried);
                if order.is_empty() {
                    // Endpoints that asked us to wait (Retry-After) come back.
                    if let Some(wait) = self.fleet.cooling_wait(model, &tags, &tried) {
                        if cooled < MAX_COOL_DOWNS && wait <= MAX_COOL_DOWN {
                            pause(wait, ctx).await?;
                            continue;
                        }
                    }
                    break;
                }
                let Some(lease) = self.fleet.acquire(&order).await else {
                    break;
                };
                let (lease, admission) = match self.fleet.admit(lease.index, model, estimate).await
                {
                    Ok(admission) => (lease, admission),
                    Err(mut wait) => {
                        // Over this endpoint's limits: another eligible one may have room.
                        drop(lease);
                        let mut admitted = None;
                        for &other in &order {
                            match self.fleet.admit(other, model, estimate).await {
                                Ok(admission) => {
                                    admitted = Some((other, admission));
                                    break;
                                }
                                Err(w) => wait = wait.min(w),
                            }
                        }
                        let Some((other, admission)) = admitted else {
                            pause(wait, ctx).await?;
                            continue;
                        };
                        match self.fleet.acquire(&[other]).await {
                            Some(lease) => (lease, admission),
                            None => {
                                self.fleet.release(other, model, admission).await;
                                break;
                            }
                        }
                    }
                };
                let index = lease.index;
                tried.push(index);
                let dialect = match self.fleet.dialect(index).await {
                    Ok(d) => d,
                    Err(e) => {
                        self.fleet.release(index, model, admission).await;
                        self.fleet.record_failure(index, &e);
                        failovers += 1;
                        last_error = Some(e);
                        continue;
                    }
                };
                let mut request = template.clone();
                request.model = model.clone();
                let outcome = self.attempt(&lease, dialect, &request, ctx).await;
                if let Ok(reply) = &outcome {
                    if reply.prompt_tokens.is_some() || reply.completion_tokens.is_some() {
                        let used =
                            reply.prompt_tokens.unwrap_or(0) + reply.completion_tokens.unwrap_or(0);
                        self.fleet
                            .settle(index, model, &admission, used as f64)
                            .await;
                    }
                }
                match outcome {
                    Ok(reply) => {
                        self.fleet.record_success(index, model, lease.elapsed());
                        drop(lease);
                        return self
                            .finish(method, &template, reply, index, model, started, failovers);
                    }
                    Err(e) if e.code == ErrorCode::ModelNotFound => {
                        self.fleet.record_missing_model(index, model);
                        last_error = Some(e);
                    }
                    Err(e) if e.retryable => {
                        let retry_after = e.details["retry_after"].as_u64();
                        if e.code == ErrorCode::RateLimited || retry_after.is_some() {
                            // The endpoint is fine, only busy: skip it until it said
                            // to come back (1 s when it did not say), then try it again.
                            self.fleet
                                .cool(index, Duration::from_secs(retry_after.unwrap_or(1)));
                            tried.retain(|&t| t != index);
                            cooled += 1;
                        } else {
                            self.fleet.record_failure(index, &e);
                        }
                        if let Some(sink) = &ctx.events {
                            sink(ProviderEvent::Log {
                                line: format!(
                                    "failing over from `{}`: {}",
                                    self.fleet.endpoints[index].config.name, e.message
                                ),
                            });
                        }
                        failovers += 1;
                        last_error = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            if last_error
                .as_ref()
                .is_some_and(|e| e.code == ErrorCode::ModelNotFound)
            {
                missing_everywhere.push(model.clone());
            }
        }
        Err(match last_error {
            Some(e) if e.code == ErrorCode::ModelNotFound => {
                let tried = missing_everywhere.join(", ");
                GzError::new(
                    ErrorCode::ModelNotFound,
                    format!("no endpoint serves model {tried} ({})", e.message),
                )
                .with_hint(format!(
                    "Install it (e.g. `ollama pull {}`) or map the name to a served model under `llm.models` in the config.",
                    models.first().cloned().unwrap_or_default()
                ))
            }
            Some(mut e) => {
                if failovers > 1 {
                    e.message = format!("{} (after trying {failovers} endpoints)", e.message);
                }
                e
            }
            None => {
                let names: Vec<String> = self
                    .fleet
                    .endpoints
                    .iter()
                    .map(|e| e.config.name.clone())
                    .collect();
                GzError::new(
                    ErrorCode::NoHealthyEndpoint,
                    format!(
                        "no healthy endpoint serves model `{}`{} (endpoints: {})",
                        models.join("`, `"),
                        if tags.is_empty() {
                            String::new()
                        } else {
                            format!(" with tags {}", tags.join(", "))
                        },
                        names.join(", ")
                    ),
                )
            }
        })
    }

    /// What a call cost in USD: the price table's entry for the model (the
    /// name as asked, as served, or without its `:tag`), nothing on a local
    /// endpoint, otherwise unknown (`None`).
    fn cost(
        &self,
        endpoint: &EndpointConfig,
        model: &str,
        prompt: Option<u64>,
        completion: Option<u64>,
    ) -> Option<f64> {
        let base = model.split(':').next().unwrap_or(model);
        let price = self
            .config
            .prices
            .get(model)
            .or_else(|| self.config.prices.get(base))
            .copied()
            .or_else(|| is_local(&endpoint.url).then_some(Price::default()))?;
        let (p, c) = (prompt.unwrap_or(0) as f64, completion.unwrap_or(0) as f64);
        Some((p * price.input + c * price.output) / 1_000_000.0)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        method: &str,
        request: &LlmRequest,
        reply: Reply,
        index: usize,
        model: &str,
        started: Instant,
        failovers: u32,
    ) -> Result<Value, GzError> {
        let endpoint = &self.fleet.endpoints[index].config;
        let usage = json!({
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": match (reply.prompt_tokens, reply.completion_tokens) {
                (Some(p), Some(c)) => Some(p + c),
                (Some(p), None) => Some(p),
                _ => None,
            },
        });
        let mut record = Map::new();
        if let Some(embeddings) = reply.embeddings {
            record.insert(
                "dimensions".into(),
                json!(embeddings.first().and_then(Value::as_array).map(Vec::len)),
            );
            record.insert("embeddings".into(), Value::Array(embeddings));
        } else {
            record.insert("response".into(), json!(reply.text));
        }
        record.insert(
            "model".into(),
            json!(reply.model.unwrap_or_else(|| model.to_string())),
        );
        record.insert("endpoint".into(), json!(endpoint.name));
        record.insert(
            "cost_usd".into(),
            json!(self.cost(
                endpoint,
                model,
                reply.prompt_tokens,
                reply.completion_tokens
            )),
        );
        record.insert("usage".into(), usage);
        record.insert(
            "duration_ms".into(),
            json!(started.elapsed().as_millis() as u64),
        );
        record.insert("first_token_ms".into(), json!(reply.first_token_ms));
        record.insert("finish_reason".into(), json!(reply.finish_reason));
        record.insert("failovers".into(), json!(failovers));
        let asked_for_tools = !reply.tool_calls.is_empty();
        if asked_for_tools {
            record.insert("tool_calls".into(), json!(reply.tool_calls));
        }
        // A turn that asks for tools is not the answer the format is for.
        if let Some(format) = request.format.as_ref().filter(|_| !asked_for_tools) {
            let parsed = parse_structured(&reply.text).map_err(|why| {
                GzError::new(
                    ErrorCode::StructuredOutputInvalid,
                    format!("{method}: the reply is not JSON: {why}"),
                )
                .with_details(json!({"response": reply.text}))
            })?;
            if let Format::Schema(schema) = format {
                let validator = jsonschema::validator_for(schema)
                    .map_err(|e| invalid(format!("`format` is not a valid JSON Schema: {e}")))?;
                let problems = schema_problems(&validator, &parsed);
                if !problems.is_empty() {
                    return Err(GzError::new(
                        ErrorCode::StructuredOutputInvalid,
                        format!(
                            "{method}: the reply does not match the schema: {}",
                            problems.join("; ")
                        ),
                    )
                    .with_details(json!({"response": reply.text, "violations": problems})));
                }
            }
            record.insert("parsed".into(), parsed);
        }
        Ok(Value::Object(record))
    }
}

/// The method whose loop the runtime drives, each turn an `llm/chat` call.
pub const AGENT: &str = "llm/agent";

/// A tool as both dialects take it: `{type: function, function: {name,
/// description, parameters}}`; the bare `{name, description, parameters}` is
/// accepted too.
fn tool_definition(i: usize, tool: &Value) -> Result<Value, GzError> {
    let function = match tool.get("function") {
        Some(f) if f.is_object() => f,
        _ => tool,
    };
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| invalid(format!("tools[{i}] has no `name`")))?;
    let parameters = function
        .get("parameters")
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    if !parameters.is_object() {
        return Err(invalid(format!(
            "tools[{i}] (`{name}`): `parameters` must be a JSON Schema object"
        )));
    }
    jsonschema::validator_for(&parameters).map_err(|e| {
        invalid(format!(
            "tools[{i}] (`{name}`): `parameters` is not a valid JSON Schema: {e}"
        ))
    })?;
    let mut out = json!({"name": name, "parameters": parameters});
    if let Some(description) = function.get("description").and_then(Value::as_str) {
        out["description"] = json!(description);
    }
    Ok(json!({"type": "function", "function": out}))
}

/// The structured answer in `text` for `format` (`"json"` or a JSON Schema):
/// GZ2013 (retryable) when it is not JSON or does not match.
pub fn structured_answer(method: &str, text: &str, format: &Value) -> Result<Value, GzError> {
    let parsed = parse_structured(text).map_err(|why| {
        GzError::new(
            ErrorCode::StructuredOutputInvalid,
            format!("{method}: the reply is not JSON: {why}"),
        )
        .with_details(json!({"response": text}))
    })?;
    if format.is_object() {
        let validator = jsonschema::validator_for(format)
            .map_err(|e| invalid(format!("`format` is not a valid JSON Schema: {e}")))?;
        let problems = schema_problems(&validator, &parsed);
        if !problems.is_empty() {
            return Err(GzError::new(
                ErrorCode::StructuredOutputInvalid,
                format!(
                    "{method}: the reply does not match the schema: {}",
                    problems.join("; ")
                ),
            )
            .with_details(json!({"response": text, "violations": problems})));
        }
    }
    Ok(parsed)
}

/// At most five violations of `schema` by `value`, each with its place.
pub fn schema_problems(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!(
                "{}{}",
                if at.is_empty() {
                    String::new()
                } else {
                    format!("{at}: ")
                },
                e
            )
        })
        .take(5)
        .collect()
}

/// JSON out of a reply, tolerating a code fence around it.
fn parse_structured(text: &str) -> Result<Value, String> {
    let trimmed = text.trim();
    serde_json::from_str(trimmed)
        .or_else(|_| serde_json::from_str(&gleitzeit_core::refs::extract_code(trimmed)))
        .map_err(|e| e.to_string())
}

fn http_error(
    endpoint: &str,
    model: &str,
    status: u16,
    body: &str,
    retry_after: Option<u64>,
) -> GzError {
    let detail = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .and_then(|e| {
                    e.get("message")
                        .and_then(Value::as_str)
                        .or_else(|| e.as_str())
                })
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.chars().take(300).collect());
    let lower = detail.to_ascii_lowercase();
    let message = format!("endpoint `{endpoint}` answered {status}: {detail}");
    let error = match status {
        404 if lower.contains("model") || lower.contains("not found") => GzError::new(
            ErrorCode::ModelNotFound,
            format!("model `{model}` is not available on endpoint `{endpoint}`: {detail}"),
        ),
        429 => GzError::new(ErrorCode::RateLimited, message),
        401 | 403 => GzError::new(ErrorCode::LlmRequestFailed, message)
            .retryable(false)
            .with_hint("Check the endpoint's API key (`api_key_env` in the endpoint's config)."),
        500..=599 => GzError::new(ErrorCode::LlmRequestFailed, message).retryable(true),
        _ => GzError::new(ErrorCode::LlmRequestFailed, message).retryable(false),
    };
    let mut error = error
        .at(endpoint.to_string())
        .with_details(json!({"status": status, "retry_after": retry_after}));
    if status == 503 {
        error.retryable = true;
    }
    error
}

#[async_trait]
impl Provider for LlmProvider {
    fn protocol(&self) -> &'static str {
        "llm"
    }

    async fn health(&self) -> crate::ProviderHealth {
        let endpoints = self.check_all().await;
        let healthy = endpoints.iter().filter(|e| e.healthy == Some(true)).count();
        let (status, reason) = if healthy == endpoints.len() {
            (crate::HealthStatus::Healthy, None)
        } else if healthy > 0 {
            (
                crate::HealthStatus::Degraded,
                Some(format!(
                    "{healthy} of {} LLM endpoints reachable",
                    endpoints.len()
                )),
            )
        } else {
            (
                crate::HealthStatus::Unhealthy,
                Some("no LLM endpoint is reachable".to_string()),
            )
        };
        crate::ProviderHealth {
            status,
            reason,
            detail: serde_json::json!({
                "strategy": self.config.strategy.as_str(),
                "endpoints": endpoints,
            }),
        }
    }

    fn methods(&self) -> Vec<MethodInfo> {
        [
            ("llm/chat", "Chat completion: messages, or prompt + system; files: text files appended to the prompt"),
            ("llm/generate", "Text completion of a prompt"),
            ("llm/vision", "Chat about images (file paths or base64)"),
            ("llm/embed", "Embeddings of a text or a list of texts"),
            (AGENT, "A durable tool-calling loop: the model calls functions, MCP tools or HTTP until it answers"),
        ]
        .iter()
        .map(|(m, d)| MethodInfo {
            method: m.to_string(),
            description: d.to_string(),
        })
        .collect()
    }

    async fn prepare(&self) -> Result<(), GzError> {
        self.start_health_checks();
        Ok(())
    }

    async fn call(&self, method: &str, params: Value, ctx: &CallContext) -> Result<Value, GzError> {
        self.complete(method, &params, ctx).await
    }

    async fn shutdown(&self) {
        if let Some(stop) = self.health.lock().unwrap_or_else(|p| p.into_inner()).take() {
            stop.cancel();
        }
    }
}

#[cfg(test)]
mod tests;
