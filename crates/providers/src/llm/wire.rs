//! The two wire dialects. Each turns one [`LlmRequest`] into an HTTP request and
//! decodes the server's reply — NDJSON lines for Ollama, SSE `data:` lines for
//! OpenAI-compatible servers — into the same [`Piece`]s.

use super::config::Dialect;
use gleitzeit_core::{ErrorCode, GzError};
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Chat,
    Generate,
    Embed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub base64: String,
    pub mime: &'static str,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
    pub images: Vec<Image>,
    /// An assistant turn's requests for tools.
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` message: the call it answers (OpenAI-compatible servers
    /// match on it) and the tool's name (Ollama matches on that).
    pub tool_call_id: Option<String>,
    pub tool_name: Option<String>,
}

/// One tool call the model asked for, assembled from whatever pieces the
/// server sent it in.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// Always a JSON object.
    pub arguments: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    Json,
    Schema(Value),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub temperature: Option<f64>,
    pub max_tokens: Option<u64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
}

/// A request in neither dialect; `model` is the concrete model to ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmRequest {
    pub op: Operation,
    pub model: String,
    /// Chat messages; for `Generate` the prompt (and system) are kept separately.
    pub messages: Vec<Message>,
    pub prompt: Option<String>,
    pub system: Option<String>,
    pub images: Vec<Image>,
    pub options: Options,
    pub format: Option<Format>,
    /// Texts to embed.
    pub input: Vec<String>,
    /// Tools offered to the model, each `{type: function, function: {name,
    /// description, parameters}}` (the form both dialects take).
    pub tools: Vec<Value>,
    /// OpenAI-compatible servers: whether one turn may ask for several tools.
    pub parallel_tool_calls: Option<bool>,
}

/// One decoded part of a reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Token(String),
    Done {
        prompt_tokens: Option<u64>,
        completion_tokens: Option<u64>,
        finish_reason: Option<String>,
        model: Option<String>,
    },
    /// Part of the usage that arrives apart from the end (OpenAI's usage chunk).
    Usage {
        prompt_tokens: Option<u64>,
        completion_tokens: Option<u64>,
    },
    /// A piece of a tool call. OpenAI-compatible servers stream a call as
    /// deltas under one `index` (the id and name first, then fragments of the
    /// arguments' JSON text); Ollama sends each call whole, with its
    /// arguments as an object.
    ToolCall {
        index: Option<usize>,
        id: Option<String>,
        name: Option<String>,
        arguments: ToolArguments,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolArguments {
    /// A fragment of the arguments' JSON text, to be appended.
    Fragment(String),
    /// The arguments as a value (already complete).
    Whole(Value),
}

/// Collects [`Piece::ToolCall`]s of one reply into whole calls, in the order
/// the model made them.
#[derive(Debug, Default)]
pub struct ToolCallAssembler {
    calls: Vec<PartialCall>,
}

#[derive(Debug, Default)]
struct PartialCall {
    index: Option<usize>,
    id: Option<String>,
    name: String,
    text: String,
    whole: Option<Value>,
}

impl ToolCallAssembler {
    pub fn add(
        &mut self,
        index: Option<usize>,
        id: Option<String>,
        name: Option<String>,
        arguments: ToolArguments,
    ) {
        // A delta joins the call with its index; one without an index (or a
        // whole call) starts a call of its own.
        let at = match index {
            Some(i) => self.calls.iter().position(|c| c.index == Some(i)),
            None => None,
        };
        let call = match at {
            Some(at) => &mut self.calls[at],
            None => {
                self.calls.push(PartialCall {
                    index,
                    ..PartialCall::default()
                });
                let last = self.calls.len() - 1;
                &mut self.calls[last]
            }
        };
        if let Some(id) = id.filter(|i| !i.is_empty()) {
            call.id = Some(id);
        }
        if let Some(name) = name {
            // Some servers repeat the name in every delta; others split it.
            if !call.name.ends_with(&name) || call.name.is_empty() {
                call.name.push_str(&name);
            }
        }
        match arguments {
            ToolArguments::Fragment(text) => call.text.push_str(&text),
            ToolArguments::Whole(value) => call.whole = Some(value),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The whole calls. A call without a name or whose arguments are not a
    /// JSON object is the server's fault (GZ2081, retryable: another sample
    /// may be well formed). Calls without an id get `call_N` (N from 0 in
    /// this reply), so ids are stable when a reply is replayed.
    pub fn finish(self, endpoint: &str) -> Result<Vec<ToolCall>, GzError> {
        let mut out = Vec::with_capacity(self.calls.len());
        for (n, call) in self.calls.into_iter().enumerate() {
            let name = call.name.trim().to_string();
            if name.is_empty() {
                return Err(malformed_call(
                    endpoint,
                    format!("tool call #{n} has no name"),
                ));
            }
            let arguments = match call.whole {
                Some(Value::String(text)) => parse_arguments(&text),
                Some(value) => Ok(value),
                None => parse_arguments(&call.text),
            }
            .map_err(|why| {
                malformed_call(
                    endpoint,
                    format!("the arguments of tool call `{name}` are not JSON: {why}"),
                )
            })?;
            if !arguments.is_object() {
                return Err(malformed_call(
                    endpoint,
                    format!(
                        "the arguments of tool call `{name}` are not a JSON object: {arguments}"
                    ),
                ));
            }
            out.push(ToolCall {
                id: call.id.unwrap_or_else(|| format!("call_{n}")),
                name,
                arguments,
            });
        }
        Ok(out)
    }
}

fn parse_arguments(text: &str) -> Result<Value, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_str(text).map_err(|e| {
        let shown: String = text.chars().take(120).collect();
        format!("{e} in `{shown}`")
    })
}

fn malformed_call(endpoint: &str, message: String) -> GzError {
    GzError::new(
        ErrorCode::ToolCallMalformed,
        format!("endpoint `{endpoint}`: {message}"),
    )
    .at(endpoint.to_string())
    .retryable(true)
}

pub fn path(dialect: Dialect, op: Operation) -> &'static str {
    match (dialect, op) {
        (Dialect::Ollama, Operation::Chat) => "/api/chat",
        (Dialect::Ollama, Operation::Generate) => "/api/generate",
        (Dialect::Ollama, Operation::Embed) => "/api/embed",
        (Dialect::Openai, Operation::Embed) => "/v1/embeddings",
        (Dialect::Openai, _) => "/v1/chat/completions",
    }
}

pub fn models_path(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Ollama => "/api/tags",
        Dialect::Openai => "/v1/models",
    }
}

/// Chat messages with the request's loose images attached to the last user turn.
fn messages_with_images(request: &LlmRequest) -> Vec<Message> {
    let mut messages = request.messages.clone();
    if request.op == Operation::Generate || messages.is_empty() {
        messages.clear();
        if let Some(system) = &request.system {
            messages.push(Message {
                role: "system".into(),
                content: system.clone(),
                ..Message::default()
            });
        }
        messages.push(Message {
            role: "user".into(),
            content: request.prompt.clone().unwrap_or_default(),
            ..Message::default()
        });
    }
    if !request.images.is_empty() {
        let index = messages
            .iter()
            .rposition(|m| m.role == "user")
            .unwrap_or(messages.len() - 1);
        messages[index]
            .images
            .extend(request.images.iter().cloned());
    }
    messages
}

pub fn body(dialect: Dialect, request: &LlmRequest) -> Value {
    match dialect {
        Dialect::Ollama => ollama_body(request),
        Dialect::Openai => openai_body(request),
    }
}

fn ollama_body(request: &LlmRequest) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(request.model));
    match request.op {
        Operation::Embed => {
            body.insert("input".into(), json!(request.input));
            return Value::Object(body);
        }
        Operation::Generate => {
            body.insert(
                "prompt".into(),
                json!(request.prompt.clone().unwrap_or_default()),
            );
            if let Some(system) = &request.system {
                body.insert("system".into(), json!(system));
            }
            if !request.images.is_empty() {
                body.insert(
                    "images".into(),
                    json!(request
                        .images
                        .iter()
                        .map(|i| i.base64.clone())
                        .collect::<Vec<_>>()),
                );
            }
        }
        Operation::Chat => {
            let messages: Vec<Value> = messages_with_images(request)
                .into_iter()
                .map(|m| {
                    let mut message = json!({"role": m.role, "content": m.content});
                    if !m.images.is_empty() {
                        message["images"] =
                            json!(m.images.into_iter().map(|i| i.base64).collect::<Vec<_>>());
                    }
                    if !m.tool_calls.is_empty() {
                        // Ollama's shape: no id, arguments as an object.
                        message["tool_calls"] = m
                            .tool_calls
                            .iter()
                            .map(
                                |c| json!({"function": {"name": c.name, "arguments": c.arguments}}),
                            )
                            .collect();
                    }
                    if let Some(name) = m.tool_name {
                        message["tool_name"] = json!(name);
                    }
                    message
                })
                .collect();
            body.insert("messages".into(), json!(messages));
            if !request.tools.is_empty() {
                body.insert("tools".into(), json!(request.tools));
            }
        }
    }
    body.insert("stream".into(), json!(true));
    let mut options = Map::new();
    let o = &request.options;
    if let Some(t) = o.temperature {
        options.insert("temperature".into(), json!(t));
    }
    if let Some(n) = o.max_tokens {
        options.insert("num_predict".into(), json!(n));
    }
    if let Some(p) = o.top_p {
        options.insert("top_p".into(), json!(p));
    }
    if let Some(s) = o.seed {
        options.insert("seed".into(), json!(s));
    }
    if !o.stop.is_empty() {
        options.insert("stop".into(), json!(o.stop));
    }
    if !options.is_empty() {
        body.insert("options".into(), Value::Object(options));
    }
    match &request.format {
        Some(Format::Json) => {
            body.insert("format".into(), json!("json"));
        }
        Some(Format::Schema(schema)) => {
            body.insert("format".into(), schema.clone());
        }
        None => {}
    }
    Value::Object(body)
}

fn openai_body(request: &LlmRequest) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(request.model));
    if request.op == Operation::Embed {
        body.insert("input".into(), json!(request.input));
        return Value::Object(body);
    }
    let messages: Vec<Value> = messages_with_images(request)
        .into_iter()
        .map(|m| {
            if !m.tool_calls.is_empty() {
                // Arguments travel as JSON text; content is null when the
                // turn only asked for tools.
                let calls: Vec<Value> = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments.to_string()}})
                    })
                    .collect();
                let content = if m.content.is_empty() { Value::Null } else { json!(m.content) };
                json!({"role": m.role, "content": content, "tool_calls": calls})
            } else if let Some(id) = &m.tool_call_id {
                json!({"role": m.role, "content": m.content, "tool_call_id": id})
            } else if m.images.is_empty() {
                json!({"role": m.role, "content": m.content})
            } else {
                let mut parts = vec![json!({"type": "text", "text": m.content})];
                parts.extend(m.images.into_iter().map(|i| {
                    json!({"type": "image_url", "image_url": {"url": format!("data:{};base64,{}", i.mime, i.base64)}})
                }));
                json!({"role": m.role, "content": parts})
            }
        })
        .collect();
    body.insert("messages".into(), json!(messages));
    if !request.tools.is_empty() {
        body.insert("tools".into(), json!(request.tools));
        if let Some(parallel) = request.parallel_tool_calls {
            body.insert("parallel_tool_calls".into(), json!(parallel));
        }
    }
    body.insert("stream".into(), json!(true));
    body.insert("stream_options".into(), json!({"include_usage": true}));
    let o = &request.options;
    if let Some(t) = o.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(n) = o.max_tokens {
        body.insert("max_tokens".into(), json!(n));
    }
    if let Some(p) = o.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(s) = o.seed {
        body.insert("seed".into(), json!(s));
    }
    if !o.stop.is_empty() {
        body.insert("stop".into(), json!(o.stop));
    }
    match &request.format {
        Some(Format::Json) => {
            body.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(Format::Schema(schema)) => {
            body.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}}),
            );
        }
        None => {}
    }
    Value::Object(body)
}

fn as_u64(value: &Value, key: &str) -> Option<u64> {
    value.get(key).and_then(Value::as_u64)
}

fn server_error(endpoint: &str, message: impl Into<String>) -> GzError {
    GzError::new(
        ErrorCode::LlmRequestFailed,
        format!("endpoint `{endpoint}`: {}", message.into()),
    )
    .at(endpoint.to_string())
}

/// Decodes one line of a streamed reply. `Ok(None)` for lines that carry
/// nothing (SSE comments, keep-alives, `[DONE]` is reported as `done`).
pub fn decode_line(
    dialect: Dialect,
    line: &str,
    endpoint: &str,
    done: &mut bool,
) -> Result<Vec<Piece>, GzError> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(vec![]);
    }
    let payload = match dialect {
        Dialect::Ollama => line,
        Dialect::Openai => {
            let Some(data) = line.strip_prefix("data:") else {
                // `event:`, `id:`, `: comment` lines.
                return Ok(vec![]);
            };
            let data = data.trim();
            if data == "[DONE]" {
                *done = true;
                return Ok(vec![]);
            }
            data
        }
    };
    let value: Value = serde_json::from_str(payload).map_err(|e| {
        let shown: String = payload.chars().take(120).collect();
        server_error(endpoint, format!("malformed stream line ({e}): {shown}")).retryable(true)
    })?;
    if let Some(error) = value.get("error") {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| error.as_str())
            .unwrap_or("unknown error");
        return Err(server_error(endpoint, message.to_string()).retryable(true));
    }
    let mut pieces = Vec::new();
    match dialect {
        Dialect::Ollama => {
            let text = value
                .pointer("/message/content")
                .or_else(|| value.get("response"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if !text.is_empty() {
                pieces.push(Piece::Token(text.to_string()));
            }
            if let Some(calls) = value.pointer("/message/tool_calls") {
                let Some(calls) = calls.as_array() else {
                    return Err(malformed_call(
                        endpoint,
                        format!("`tool_calls` is not a list: {calls}"),
                    ));
                };
                for call in calls {
                    pieces.push(Piece::ToolCall {
                        index: None,
                        id: call.get("id").and_then(Value::as_str).map(str::to_string),
                        name: Some(
                            call.pointer("/function/name")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                        ),
                        arguments: ToolArguments::Whole(
                            call.pointer("/function/arguments")
                                .cloned()
                                .unwrap_or_else(|| Value::Object(Map::new())),
                        ),
                    });
                }
            }
            if value.get("done").and_then(Value::as_bool) == Some(true) {
                *done = true;
                pieces.push(Piece::Done {
                    prompt_tokens: as_u64(&value, "prompt_eval_count"),
                    completion_tokens: as_u64(&value, "eval_count"),
                    finish_reason: value
                        .get("done_reason")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    model: value
                        .get("model")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                });
            }
        }
        Dialect::Openai => {
            if let Some(choice) = value.pointer("/choices/0") {
                let text = choice
                    .pointer("/delta/content")
                    .or_else(|| choice.pointer("/message/content"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !text.is_empty() {
                    pieces.push(Piece::Token(text.to_string()));
                }
                let calls = choice
                    .pointer("/delta/tool_calls")
                    .or_else(|| choice.pointer("/message/tool_calls"))
                    .filter(|c| !c.is_null());
                if let Some(calls) = calls {
                    let Some(calls) = calls.as_array() else {
                        return Err(malformed_call(
                            endpoint,
                            format!("`tool_calls` is not a list: {calls}"),
                        ));
                    };
                    for (n, call) in calls.iter().enumerate() {
                        let arguments = match call.pointer("/function/arguments") {
                            Some(Value::String(text)) => ToolArguments::Fragment(text.clone()),
                            None | Some(Value::Null) => ToolArguments::Fragment(String::new()),
                            Some(other) => ToolArguments::Whole(other.clone()),
                        };
                        pieces.push(Piece::ToolCall {
                            // A whole message's calls may come without an index.
                            index: call
                                .get("index")
                                .and_then(Value::as_u64)
                                .map(|i| i as usize)
                                .or(Some(n)),
                            id: call.get("id").and_then(Value::as_str).map(str::to_string),
                            name: call
                                .pointer("/function/name")
                                .and_then(Value::as_str)
                                .map(str::to_string),
                            arguments,
                        });
                    }
                }
                if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                    pieces.push(Piece::Done {
                        prompt_tokens: None,
                        completion_tokens: None,
                        finish_reason: Some(reason.to_string()),
                        model: value
                            .get("model")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                    });
                }
            }
            if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
                pieces.push(Piece::Usage {
                    prompt_tokens: as_u64(usage, "prompt_tokens"),
                    completion_tokens: as_u64(usage, "completion_tokens"),
                });
            }
        }
    }
    Ok(pieces)
}

/// Reads the embeddings out of an embed reply, with the prompt token count.
pub fn decode_embeddings(
    dialect: Dialect,
    value: &Value,
    endpoint: &str,
) -> Result<(Vec<Value>, Option<u64>), GzError> {
    let vectors = match dialect {
        Dialect::Ollama => value.get("embeddings").and_then(Value::as_array).cloned(),
        Dialect::Openai => value.get("data").and_then(Value::as_array).map(|items| {
            let mut items = items.clone();
            items.sort_by_key(|i| i.get("index").and_then(Value::as_u64).unwrap_or(0));
            items
                .into_iter()
                .filter_map(|i| i.get("embedding").cloned())
                .collect()
        }),
    };
    let vectors = vectors.ok_or_else(|| {
        server_error(endpoint, "embedding reply has no embeddings").retryable(true)
    })?;
    let tokens = match dialect {
        Dialect::Ollama => as_u64(value, "prompt_eval_count"),
        Dialect::Openai => value.get("usage").and_then(|u| as_u64(u, "prompt_tokens")),
    };
    Ok((vectors, tokens))
}

/// Model names a server lists.
pub fn decode_models(dialect: Dialect, value: &Value) -> Vec<String> {
    let list = match dialect {
        Dialect::Ollama => value.get("models"),
        Dialect::Openai => value.get("data").or_else(|| value.get("models")),
    };
    list.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|m| {
                    m.get("name")
                        .or_else(|| m.get("id"))
                        .or_else(|| m.get("model"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Does `served` answer to `wanted`? `llama3.2` matches `llama3.2:latest`; a
/// file-like name (`/models/gemma.gguf`) matches its stem.
pub fn model_matches(served: &str, wanted: &str) -> bool {
    if served == wanted {
        return true;
    }
    let base = |name: &str| -> String {
        let name = name.rsplit('/').next().unwrap_or(name);
        let name = name.strip_suffix(":latest").unwrap_or(name);
        name.strip_suffix(".gguf")
            .unwrap_or(name)
            .to_ascii_lowercase()
    };
    base(served) == base(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(op: Operation) -> LlmRequest {
        LlmRequest {
            op,
            model: "m".into(),
            messages: vec![Message {
                role: "user".into(),
                content: "hi".into(),
                ..Message::default()
            }],
            prompt: Some("p".into()),
            system: Some("s".into()),
            images: vec![Image {
                base64: "AAAA".into(),
                mime: "image/png",
            }],
            options: Options {
                temperature: Some(0.5),
                max_tokens: Some(10),
                top_p: None,
                stop: vec!["\n".into()],
                seed: Some(7),
            },
            format: Some(Format::Schema(json!({"type": "object"}))),
            input: vec![],
            tools: vec![],
            parallel_tool_calls: None,
        }
    }

    #[test]
    fn ollama_chat_body() {
        let body = body(Dialect::Ollama, &request(Operation::Chat));
        assert_eq!(
            body,
            json!({
                "model": "m",
                "messages": [{"role": "user", "content": "hi", "images": ["AAAA"]}],
                "stream": true,
                "options": {"temperature": 0.5, "num_predict": 10, "seed": 7, "stop": ["\n"]},
                "format": {"type": "object"},
            })
        );
    }

    #[test]
    fn ollama_generate_body_keeps_prompt_and_system() {
        let body = body(Dialect::Ollama, &request(Operation::Generate));
        assert_eq!(body["prompt"], "p");
        assert_eq!(body["system"], "s");
        assert_eq!(body["images"], json!(["AAAA"]));
    }

    #[test]
    fn openai_body_uses_image_parts_and_json_schema() {
        let body = body(Dialect::Openai, &request(Operation::Chat));
        assert_eq!(
            body["messages"][0]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAAA"
        );
        assert_eq!(body["response_format"]["type"], "json_schema");
        assert_eq!(body["max_tokens"], 10);
        assert_eq!(body["stream_options"]["include_usage"], true);
        let generate = super::body(Dialect::Openai, &request(Operation::Generate));
        assert_eq!(
            generate["messages"][0],
            json!({"role": "system", "content": "s"})
        );
    }

    #[test]
    fn decodes_ollama_lines() {
        let mut done = false;
        let pieces = decode_line(
            Dialect::Ollama,
            r#"{"model":"m","message":{"role":"assistant","content":"Hel"},"done":false}"#,
            "e",
            &mut done,
        )
        .unwrap();
        assert_eq!(pieces, vec![Piece::Token("Hel".into())]);
        let pieces = decode_line(
            Dialect::Ollama,
            r#"{"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":5,"eval_count":9}"#,
            "e",
            &mut done,
        )
        .unwrap();
        assert!(done);
        assert_eq!(
            pieces,
            vec![Piece::Done {
                prompt_tokens: Some(5),
                completion_tokens: Some(9),
                finish_reason: Some("stop".into()),
                model: Some("m".into())
            }]
        );
        let error = decode_line(Dialect::Ollama, "{not json", "e", &mut done).unwrap_err();
        assert_eq!(error.code, ErrorCode::LlmRequestFailed);
        assert!(error.message.contains("malformed"));
        let error =
            decode_line(Dialect::Ollama, r#"{"error":"boom"}"#, "e", &mut done).unwrap_err();
        assert!(error.message.contains("boom"));
    }

    #[test]
    fn decodes_openai_sse() {
        let mut done = false;
        assert!(decode_line(Dialect::Openai, ": keep-alive", "e", &mut done)
            .unwrap()
            .is_empty());
        let pieces = decode_line(
            Dialect::Openai,
            r#"data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"model":"g"}"#,
            "e",
            &mut done,
        )
        .unwrap();
        assert_eq!(pieces, vec![Piece::Token("Hi".into())]);
        let pieces = decode_line(
            Dialect::Openai,
            r#"data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
            "e",
            &mut done,
        )
        .unwrap();
        assert_eq!(
            pieces,
            vec![Piece::Usage {
                prompt_tokens: Some(3),
                completion_tokens: Some(4)
            }]
        );
        decode_line(Dialect::Openai, "data: [DONE]", "e", &mut done).unwrap();
        assert!(done);
    }

    fn assemble(dialect: Dialect, lines: &[&str]) -> Result<Vec<ToolCall>, GzError> {
        let mut done = false;
        let mut calls = ToolCallAssembler::default();
        for line in lines {
            for piece in decode_line(dialect, line, "e", &mut done)? {
                if let Piece::ToolCall {
                    index,
                    id,
                    name,
                    arguments,
                } = piece
                {
                    calls.add(index, id, name, arguments);
                }
            }
        }
        calls.finish("e")
    }

    #[test]
    fn assembles_streamed_openai_tool_call_deltas_by_index() {
        // Two parallel calls whose deltas interleave, as llama.cpp and vLLM send them.
        let calls = assemble(
            Dialect::Openai,
            &[
                r#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"count_words","arguments":""}}]}}]}"#,
                r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"read_text_file","arguments":"{\"pa"}}]}}]}"#,
                r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"text\": \"a b"}}]}}]}"#,
                r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":" c\"}"}}]}}]}"#,
                r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"th\": \"/x\"}"}}]}}]}"#,
                r#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
                "data: [DONE]",
            ],
        )
        .unwrap();
        assert_eq!(
            calls,
            vec![
                ToolCall {
                    id: "call_a".into(),
                    name: "count_words".into(),
                    arguments: json!({"text": "a b c"})
                },
                ToolCall {
                    id: "call_b".into(),
                    name: "read_text_file".into(),
                    arguments: json!({"path": "/x"})
                },
            ]
        );
    }

    #[test]
    fn whole_openai_message_tool_calls_and_missing_ids() {
        let calls = assemble(
            Dialect::Openai,
            &[
                r#"data: {"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"type":"function","function":{"name":"f","arguments":"{}"}},{"type":"function","function":{"name":"g","arguments":""}}]},"finish_reason":"tool_calls"}]}"#,
            ],
        )
        .unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[0].id.as_str(), calls[0].name.as_str()),
            ("call_0", "f")
        );
        assert_eq!(
            (calls[1].id.as_str(), &calls[1].arguments),
            ("call_1", &json!({}))
        );
    }

    #[test]
    fn ollama_tool_calls_come_whole() {
        let calls = assemble(
            Dialect::Ollama,
            &[
                r#"{"model":"m","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"a","arguments":{"x":1}}},{"function":{"name":"b","arguments":{}}}]},"done":false}"#,
                r#"{"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop"}"#,
            ],
        )
        .unwrap();
        assert_eq!(
            calls,
            vec![
                ToolCall {
                    id: "call_0".into(),
                    name: "a".into(),
                    arguments: json!({"x": 1})
                },
                ToolCall {
                    id: "call_1".into(),
                    name: "b".into(),
                    arguments: json!({})
                },
            ]
        );
    }

    #[test]
    fn malformed_tool_calls_are_gz2081() {
        let cut = assemble(
            Dialect::Openai,
            &[
                r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{\"a\": "}}]}}]}"#,
            ],
        )
        .unwrap_err();
        assert_eq!(cut.code, ErrorCode::ToolCallMalformed);
        assert!(cut.retryable);
        assert!(cut.message.contains("`f`"), "{}", cut.message);
        let not_object = assemble(
            Dialect::Openai,
            &[
                r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"[1]"}}]}}]}"#,
            ],
        )
        .unwrap_err();
        assert!(not_object.message.contains("not a JSON object"));
        let nameless = assemble(
            Dialect::Ollama,
            &[r#"{"message":{"role":"assistant","content":"","tool_calls":[{"function":{"arguments":{}}}]},"done":false}"#],
        )
        .unwrap_err();
        assert!(nameless.message.contains("no name"));
        let not_list = assemble(
            Dialect::Ollama,
            &[r#"{"message":{"role":"assistant","content":"","tool_calls":{"x":1}},"done":false}"#],
        )
        .unwrap_err();
        assert_eq!(not_list.code, ErrorCode::ToolCallMalformed);
    }

    #[test]
    fn tool_turns_in_both_dialects() {
        let mut request = request(Operation::Chat);
        request.images.clear();
        request.format = None;
        request.tools = vec![
            json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}),
        ];
        request.parallel_tool_calls = Some(false);
        request.messages.push(Message {
            role: "assistant".into(),
            tool_calls: vec![ToolCall {
                id: "call_0".into(),
                name: "f".into(),
                arguments: json!({"x": 1}),
            }],
            ..Message::default()
        });
        request.messages.push(Message {
            role: "tool".into(),
            content: "42".into(),
            tool_call_id: Some("call_0".into()),
            tool_name: Some("f".into()),
            ..Message::default()
        });
        let ollama = body(Dialect::Ollama, &request);
        assert_eq!(ollama["tools"], json!(request.tools));
        assert_eq!(
            ollama["messages"][1],
            json!({"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]})
        );
        assert_eq!(
            ollama["messages"][2],
            json!({"role": "tool", "content": "42", "tool_name": "f"})
        );
        let openai = body(Dialect::Openai, &request);
        assert_eq!(openai["parallel_tool_calls"], false);
        assert_eq!(
            openai["messages"][1],
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]})
        );
        assert_eq!(
            openai["messages"][2],
            json!({"role": "tool", "content": "42", "tool_call_id": "call_0"})
        );
    }

    #[test]
    fn model_names_match_loosely() {
        assert!(model_matches("llama3.2:latest", "llama3.2"));
        assert!(model_matches("/cache/models/gemma3.gguf", "gemma3"));
        assert!(!model_matches("llama3.2:1b", "llama3.2"));
    }
}
