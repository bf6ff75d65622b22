//! Record and replay of provider exchanges (`gleitzeit run --record DIR` /
//! `--replay DIR`), so a workflow with LLM and HTTP steps runs
//! deterministically in CI without any endpoint.
//!
//! A [`Recorder`] wraps a provider ([`Recorder::wrap`]); the runtime and
//! everything above it see the same `Provider` calls, streamed tokens and
//! results as with a live endpoint. Each call is keyed by the SHA-256 of the
//! canonical JSON of its method and its parameters with secrets removed
//! (everything that determines the answer: model, messages or prompt, options,
//! format; for HTTP method, url, headers, body), plus an occurrence counter for
//! identical requests within one run. One JSON file per exchange:
//!
//! ```text
//! DIR/llm_chat-3fa2c1d9e0b4a7f1-1.json
//! {"gleitzeit_recording": 1, "method": "llm/chat", "key": "3fa2…", "occurrence": 1,
//!  "request": {…params without secrets…}, "tokens": ["Hel", "lo"],
//!  "outcome": {"ok": {…result…}} | {"error": {…GzError…}}}
//! ```
//!
//! Replay answers from those files and sends the recorded tokens again; it
//! never opens a connection. A request without an entry is GZ2060, a file that
//! is not a valid entry GZ2061 (checked for every file when the recording is
//! opened). Secrets — header values such as `Authorization`, `Cookie`,
//! `X-Api-Key`, keys named like `api_key`/`password`, secret query parameters —
//! are never written.

use crate::{CallContext, EventSink, MethodInfo, Provider, ProviderEvent, ProviderHealth};
use async_trait::async_trait;
use gleitzeit_core::{ErrorCode, GzError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The format version written into every entry.
const VERSION: u32 = 1;

/// Parameter and header names whose values are secrets: never hashed, never written.
const SECRET_KEYS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "api_key",
    "apikey",
    "x-auth-token",
    "access_token",
    "refresh_token",
    "client_secret",
    "password",
    "secret",
];

/// Query parameters of a URL whose values are replaced before hashing and writing.
const SECRET_QUERY: &[&str] = &[
    "api_key",
    "apikey",
    "key",
    "token",
    "access_token",
    "secret",
    "password",
    "sig",
    "signature",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Record,
    Replay,
}

/// One recorded exchange, as stored in its file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub gleitzeit_recording: u32,
    pub method: String,
    pub key: String,
    pub occurrence: u32,
    pub request: Value,
    #[serde(default)]
    pub tokens: Vec<String>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Outcome {
    Ok(Value),
    Error(GzError),
}

/// Records provider exchanges into a directory, or answers them from one.
pub struct Recorder {
    dir: PathBuf,
    mode: Mode,
    /// Calls seen so far per key in this run.
    counters: Mutex<HashMap<String, u32>>,
    /// Replay: every entry of the directory by file name.
    entries: HashMap<String, Entry>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("dir", &self.dir)
            .field("mode", &self.mode)
            .finish()
    }
}

fn corrupt(file: &Path, entry: &str, why: impl std::fmt::Display) -> GzError {
    GzError::new(
        ErrorCode::ReplayCorrupt,
        format!(
            "recording file `{}` (entry {entry}) is corrupt: {why}",
            file.display()
        ),
    )
    .at(file.display().to_string())
}

impl Recorder {
    /// Records into `dir` (created if missing); existing entries with the
    /// same key and occurrence are replaced.
    pub fn record(dir: impl Into<PathBuf>) -> Result<Arc<Recorder>, GzError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| {
            GzError::new(
                ErrorCode::FileWriteFailed,
                format!(
                    "cannot create the recording directory `{}`: {e}",
                    dir.display()
                ),
            )
        })?;
        Ok(Arc::new(Recorder {
            dir,
            mode: Mode::Record,
            counters: Mutex::default(),
            entries: HashMap::new(),
        }))
    }

    /// Opens a recording and checks every entry in it.
    pub fn replay(dir: impl Into<PathBuf>) -> Result<Arc<Recorder>, GzError> {
        let dir = dir.into();
        let listing = std::fs::read_dir(&dir).map_err(|e| {
            GzError::new(
                ErrorCode::FileNotFound,
                format!(
                    "cannot read the recording directory `{}`: {e}",
                    dir.display()
                ),
            )
            .with_hint("Record one first with `gleitzeit run --record DIR`.")
        })?;
        let mut names: Vec<String> = listing
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        let mut entries = HashMap::new();
        for name in names {
            let path = dir.join(&name);
            let label = name.trim_end_matches(".json").to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| corrupt(&path, &label, e))?;
            let entry: Entry =
                serde_json::from_str(&text).map_err(|e| corrupt(&path, &label, e))?;
            if entry.gleitzeit_recording != VERSION {
                return Err(corrupt(
                    &path,
                    &label,
                    format!(
                        "format version {} (expected {VERSION})",
                        entry.gleitzeit_recording
                    ),
                ));
            }
            let expected = file_name(&entry.method, &entry.key, entry.occurrence);
            if expected != name {
                return Err(corrupt(
                    &path,
                    &label,
                    format!("its method, key and occurrence name `{expected}`, not this file"),
                ));
            }
            let key = request_key(&entry.method, &entry.request);
            if key != entry.key {
                return Err(corrupt(
                    &path,
                    &label,
                    "the request does not hash to the entry's key (edited by hand?)",
                ));
            }
            entries.insert(name, entry);
        }
        Ok(Arc::new(Recorder {
            dir,
            mode: Mode::Replay,
            counters: Mutex::default(),
            entries,
        }))
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many entries a replay holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `provider` with its calls recorded or replayed.
    pub fn wrap(self: &Arc<Self>, provider: Arc<dyn Provider>) -> Arc<dyn Provider> {
        Arc::new(Recorded {
            inner: provider,
            recorder: self.clone(),
        })
    }

    fn next_occurrence(&self, key: &str) -> u32 {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let n = counters.entry(key.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    fn write(&self, entry: &Entry) -> Result<(), GzError> {
        let name = file_name(&entry.method, &entry.key, entry.occurrence);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let text = serde_json::to_string_pretty(entry).unwrap_or_default() + "\n";
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                GzError::new(
                    ErrorCode::FileWriteFailed,
                    format!("cannot write the recording file `{}`: {e}", path.display()),
                )
            })
    }
}

fn file_name(method: &str, key: &str, occurrence: u32) -> String {
    let method: String = method
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{method}-{}-{occurrence}.json", &key[..key.len().min(16)])
}

/// The stable key of a request: SHA-256 of the canonical JSON of the method
/// and the request (already without secrets).
pub fn request_key(method: &str, request: &Value) -> String {
    let mut text = String::new();
    gleitzeit_core::model::canonical_json(
        &json!({"method": method, "request": request}),
        &mut text,
    );
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// `params` without secret values: what is hashed and written.
pub fn redact(params: &Value) -> Value {
    match params {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !is_secret(k))
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("url", Value::String(url)) => Value::String(redact_url(url)),
                        _ => redact(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

fn is_secret(key: &str) -> bool {
    SECRET_KEYS.iter().any(|s| s.eq_ignore_ascii_case(key))
}

fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return url.to_string();
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_QUERY.iter().any(|s| s.eq_ignore_ascii_case(&k));
                (
                    k.into_owned(),
                    if secret {
                        "REDACTED".into()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// A result with secret response headers (`Set-Cookie`, …) removed.
fn redact_result(result: &Value) -> Value {
    let mut result = result.clone();
    if let Some(Value::Object(headers)) = result.get_mut("headers") {
        headers.retain(|k, _| !is_secret(k));
    }
    result
}

struct Recorded {
    inner: Arc<dyn Provider>,
    recorder: Arc<Recorder>,
}

#[async_trait]
impl Provider for Recorded {
    fn protocol(&self) -> &'static str {
        self.inner.protocol()
    }

    fn methods(&self) -> Vec<MethodInfo> {
        self.inner.methods()
    }

    async fn call(&self, method: &str, params: Value, ctx: &CallContext) -> Result<Value, GzError> {
        let request = redact(&params);
        let key = request_key(method, &request);
        let occurrence = self.recorder.next_occurrence(&key);
        match self.recorder.mode {
            Mode::Replay => {
                let name = file_name(method, &key, occurrence);
                let Some(entry) = self.recorder.entries.get(&name) else {
                    return Err(GzError::new(
                        ErrorCode::ReplayMissing,
                        format!(
                            "the recording `{}` has no answer for this `{method}` request (occurrence {occurrence}, key {}; expected file `{name}`)",
                            self.recorder.dir.display(),
                            &key[..16],
                        ),
                    )
                    .with_details(json!({"method": method, "request": request, "file": name})));
                };
                if let Some(sink) = &ctx.events {
                    for token in &entry.tokens {
                        sink(ProviderEvent::Token {
                            text: token.clone(),
                        });
                    }
                }
                match &entry.outcome {
                    Outcome::Ok(result) => Ok(result.clone()),
                    Outcome::Error(error) => Err(error.clone()),
                }
            }
            Mode::Record => {
                let tokens: Arc<Mutex<Vec<String>>> = Arc::default();
                let mut ctx = ctx.clone();
                if let Some(sink) = ctx.events.clone() {
                    let tokens = tokens.clone();
                    let tee: EventSink = Arc::new(move |event: ProviderEvent| {
                        if let ProviderEvent::Token { text } = &event {
                            tokens
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(text.clone());
                        }
                        sink(event)
                    });
                    ctx.events = Some(tee);
                } else {
                    let tokens = tokens.clone();
                    ctx.events = Some(Arc::new(move |event: ProviderEvent| {
                        if let ProviderEvent::Token { text } = event {
                            tokens.lock().unwrap_or_else(|e| e.into_inner()).push(text);
                        }
                    }));
                }
                let outcome = self.inner.call(method, params, &ctx).await;
                // A cancelled call says nothing about the endpoint's answer.
                if matches!(&outcome, Err(e) if e.code == ErrorCode::TaskCancelled) {
                    return outcome;
                }
                let entry = Entry {
                    gleitzeit_recording: VERSION,
                    method: method.to_string(),
                    key,
                    occurrence,
                    request,
                    tokens: std::mem::take(&mut *tokens.lock().unwrap_or_else(|e| e.into_inner())),
                    outcome: match &outcome {
                        Ok(result) => Outcome::Ok(redact_result(result)),
                        Err(error) => Outcome::Error(error.clone()),
                    },
                };
                self.recorder.write(&entry)?;
                outcome
            }
        }
    }

    async fn prepare(&self) -> Result<(), GzError> {
        match self.recorder.mode {
            // No endpoint is needed, or contacted.
            Mode::Replay => Ok(()),
            Mode::Record => self.inner.prepare().await,
        }
    }

    async fn health(&self) -> ProviderHealth {
        match self.recorder.mode {
            Mode::Replay => ProviderHealth::healthy(json!({
                "replay": self.recorder.dir.display().to_string(),
                "entries": self.recorder.len(),
            })),
            Mode::Record => self.inner.health().await,
        }
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests;
