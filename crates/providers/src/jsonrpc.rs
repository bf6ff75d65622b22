//! Custom providers declared in YAML (seeds 002/003): a protocol name, its
//! methods with JSON Schemas for their params, and a transport speaking
//! JSON-RPC 2.0 — an HTTP endpoint, or a command that reads one request per
//! line on stdin and answers one response per line on stdout. Tasks call
//! `<protocol>/<method>`.
//!
//! Params are validated before anything is sent. Each provider has a number
//! of connections (processes, or concurrent HTTP requests); a task beyond them
//! waits for one (backpressure), up to a bounded queue. Failures of the
//! transport open a circuit breaker that lets one probe through after a
//! cooldown, so a dead peer fails fast and a recovered one is used again.

use crate::{CallContext, MethodInfo, Provider};
use async_trait::async_trait;
use gleitzeit_core::{ErrorCode, GzError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;

/// Names of built-in protocols a custom provider may not take.
const RESERVED: &[&str] = &["llm", "python", "function", "http", "mcp", "workflow"];
const FAILURES_TO_OPEN: u32 = 3;
const COOLDOWN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// The protocol name tasks use: `<name>/<method>`.
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub transport: TransportSpec,
    pub methods: BTreeMap<String, MethodSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSpec {
    /// A command speaking JSON-RPC over stdio (relative paths are relative to
    /// the provider file's folder, which is also its working directory).
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// An HTTP endpoint taking JSON-RPC POSTs (instead of `command`).
    #[serde(default)]
    pub url: Option<String>,
    /// Processes (stdio) or concurrent requests (HTTP).
    #[serde(default = "default_connections")]
    pub max_connections: usize,
    /// Tasks that may wait for a connection before new ones are refused.
    #[serde(default = "default_queue")]
    pub max_queue: usize,
    /// Seconds per call.
    #[serde(default = "default_timeout")]
    pub timeout: f64,
}

fn default_connections() -> usize {
    2
}
fn default_queue() -> usize {
    1000
}
fn default_timeout() -> f64 {
    30.0
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSpec {
    #[serde(default)]
    pub description: Option<String>,
    /// JSON Schema the task's params must satisfy.
    #[serde(default)]
    pub params: Option<Value>,
}

fn config_error(path: &Path, message: impl Into<String>) -> GzError {
    GzError::new(ErrorCode::ConfigInvalid, message).at(path.display().to_string())
}

/// Reads and checks a provider file.
pub fn load(path: &Path) -> Result<(ProviderSpec, PathBuf), GzError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        GzError::new(
            ErrorCode::FileNotFound,
            format!("cannot read provider file {}: {e}", path.display()),
        )
        .at(path.display().to_string())
    })?;
    let node = gleitzeit_core::yaml::parse(&text)
        .map_err(|e| {
            config_error(path, e.message.clone()).at(format!(
                "{}:{}:{}",
                path.display(),
                e.pos.line,
                e.pos.column
            ))
        })?
        .ok_or_else(|| config_error(path, "provider file is empty"))?;
    let spec: ProviderSpec = serde_json::from_value(node.to_json())
        .map_err(|e| config_error(path, format!("not a provider description: {e}")).with_hint(
            "A provider file has `name`, `transport: {command: [...]} or {url: ...}` and `methods: {NAME: {params: <JSON Schema>}}`.",
        ))?;
    let valid_name = !spec.name.is_empty()
        && spec
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid_name || RESERVED.contains(&spec.name.as_str()) {
        return Err(config_error(
            path,
            format!("`{}` cannot be a custom protocol name", spec.name),
        )
        .with_hint(format!(
            "Use letters, digits, `_` or `-`, and none of: {}.",
            RESERVED.join(", ")
        )));
    }
    if spec.transport.command.is_empty() == spec.transport.url.is_none() {
        return Err(config_error(
            path,
            "the transport needs exactly one of `command` or `url`",
        ));
    }
    if spec.methods.is_empty() {
        return Err(config_error(path, "the provider declares no methods"));
    }
    for (method, m) in &spec.methods {
        if let Some(schema) = &m.params {
            jsonschema::validator_for(schema).map_err(|e| {
                config_error(
                    path,
                    format!("method `{method}`: params is not a valid JSON Schema: {e}"),
                )
            })?;
        }
    }
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((spec, dir))
}

/// One stdio peer process.
struct Process {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

#[derive(Default)]
struct Circuit {
    failures: u32,
    opened: Option<Instant>,
}

pub struct JsonRpcProvider {
    protocol: &'static str,
    spec: ProviderSpec,
    dir: PathBuf,
    validators: HashMap<String, jsonschema::Validator>,
    slots: Semaphore,
    waiting: AtomicUsize,
    idle: Mutex<Vec<Process>>,
    circuit: Mutex<Circuit>,
    next_id: AtomicU64,
    http: reqwest::Client,
}

fn failed(protocol: &str, why: impl std::fmt::Display) -> GzError {
    GzError::new(
        ErrorCode::CustomProviderFailed,
        format!("provider `{protocol}`: {why}"),
    )
    .at(format!("provider {protocol}"))
}

impl JsonRpcProvider {
    pub fn new(spec: ProviderSpec, dir: PathBuf) -> JsonRpcProvider {
        let validators = spec
            .methods
            .iter()
            .filter_map(|(name, m)| {
                let schema = m.params.as_ref()?;
                jsonschema::validator_for(schema)
                    .ok()
                    .map(|v| (name.clone(), v))
            })
            .collect();
        // Provider names are few and live as long as the process: leaking
        // one string per provider gives the registry its `&'static str`.
        let protocol: &'static str = Box::leak(spec.name.clone().into_boxed_str());
        JsonRpcProvider {
            protocol,
            slots: Semaphore::new(spec.transport.max_connections.max(1)),
            spec,
            dir,
            validators,
            waiting: AtomicUsize::new(0),
            idle: Mutex::default(),
            circuit: Mutex::default(),
            next_id: AtomicU64::new(1),
            http: reqwest::Client::new(),
        }
    }

    pub fn spec(&self) -> &ProviderSpec {
        &self.spec
    }

    fn check_params(&self, method: &str, params: &Value) -> Result<(), GzError> {
        let Some(validator) = self.validators.get(method) else {
            return Ok(());
        };
        let problems: Vec<String> = validator
            .iter_errors(params)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .take(5)
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        Err(GzError::new(
            ErrorCode::InvalidParameters,
            format!(
                "params of {}/{method} do not match its schema: {}",
                self.protocol,
                problems.join("; ")
            ),
        )
        .with_hint(format!(
            "`gleitzeit providers show {}` prints the schema.",
            self.protocol
        )))
    }

    fn circuit_allows(&self) -> Result<(), GzError> {
        let mut circuit = self.circuit.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(opened) = circuit.opened {
            if opened.elapsed() < COOLDOWN {
                return Err(failed(
                    self.protocol,
                    format!(
                        "circuit open after {} failures; next try in {:.0} s",
                        circuit.failures,
                        (COOLDOWN - opened.elapsed()).as_secs_f64()
                    ),
                ));
            }
            // Half-open: this call is the probe.
            circuit.opened = None;
        }
        Ok(())
    }

    fn record(&self, ok: bool) {
        let mut circuit = self.circuit.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            *circuit = Circuit::default();
        } else {
            circuit.failures += 1;
            if circuit.failures >= FAILURES_TO_OPEN {
                circuit.opened = Some(Instant::now());
            }
        }
    }

    fn spawn(&self) -> Result<Process, GzError> {
        let (program, args) = self
            .spec
            .transport
            .command
            .split_first()
            .ok_or_else(|| failed(self.protocol, "no command"))?;
        let program_path = if program.contains('/') && !Path::new(program).is_absolute() {
            self.dir.join(program).display().to_string()
        } else {
            program.clone()
        };
        let mut child = tokio::process::Command::new(&program_path)
            .args(args)
            .envs(&self.spec.transport.env)
            .current_dir(&self.dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed(self.protocol, format!("cannot start `{program}`: {e}")))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| failed(self.protocol, "no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| failed(self.protocol, "no stdout"))?;
        Ok(Process {
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
        })
    }

    async fn exchange_stdio(&self, request: &Value, id: u64) -> Result<Value, GzError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut process = match pooled {
            Some(p) => p,
            None => self.spawn()?,
        };
        let mut line = request.to_string();
        line.push('\n');
        let write = async {
            process.stdin.write_all(line.as_bytes()).await?;
            process.stdin.flush().await
        };
        write.await.map_err(|e| {
            failed(
                self.protocol,
                format!("the process stopped taking requests: {e}"),
            )
        })?;
        loop {
            let next = process
                .stdout
                .next_line()
                .await
                .map_err(|e| failed(self.protocol, format!("reading its answer: {e}")))?;
            let Some(text) = next else {
                let status = process.child.try_wait().ok().flatten();
                return Err(failed(
                    self.protocol,
                    format!(
                        "the process exited{} without answering",
                        status.map(|s| format!(" ({s})")).unwrap_or_default()
                    ),
                ));
            };
            if text.trim().is_empty() {
                continue;
            }
            let answer: Value = serde_json::from_str(&text).map_err(|_| {
                let cut: String = text.chars().take(120).collect();
                failed(
                    self.protocol,
                    format!("answered something that is not JSON-RPC: {cut}"),
                )
            })?;
            // Notifications and answers to other ids are not ours.
            if answer.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            // Only a process that answered cleanly goes back to the pool.
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(process);
            return Ok(answer);
        }
    }

    async fn exchange_http(&self, url: &str, request: &Value) -> Result<Value, GzError> {
        let response = self
            .http
            .post(url)
            .json(request)
            .send()
            .await
            .map_err(|e| failed(self.protocol, format!("{url}: {e}")))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| failed(self.protocol, format!("{url}: {e}")))?;
        serde_json::from_str(&text).map_err(|_| {
            let cut: String = text.chars().take(120).collect();
            failed(
                self.protocol,
                format!("{url} answered {status} with something that is not JSON-RPC: {cut}"),
            )
        })
    }

    async fn invoke(&self, method: &str, params: Value) -> Result<Value, GzError> {
        if !self.spec.methods.contains_key(method) {
            return Err(GzError::new(
                ErrorCode::ProviderUnavailable,
                format!("provider `{}` has no method `{method}`", self.protocol),
            )
            .with_hint(format!(
                "Its methods: {}.",
                self.spec
                    .methods
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        self.check_params(method, &params)?;
        self.circuit_allows()?;
        // Backpressure: wait for a connection, up to a bounded queue.
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        if queued >= self.spec.transport.max_queue && self.slots.available_permits() == 0 {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(GzError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "provider `{}` has {queued} calls waiting already",
                    self.protocol
                ),
            ));
        }
        let permit = self.slots.acquire().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let _permit = permit.map_err(|_| failed(self.protocol, "shut down"))?;

        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let timeout = Duration::from_secs_f64(self.spec.transport.timeout.max(0.001));
        let exchange = async {
            match &self.spec.transport.url {
                Some(url) => self.exchange_http(url, &request).await,
                None => self.exchange_stdio(&request, id).await,
            }
        };
        let answer = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                self.record(false);
                return Err(error);
            }
            Err(_) => {
                // The process that did not answer was dropped (and killed).
                self.record(false);
                return Err(GzError::new(
                    ErrorCode::TaskTimeout,
                    format!(
                        "provider `{}` did not answer {method} within {:.1} s",
                        self.protocol,
                        timeout.as_secs_f64()
                    ),
                ));
            }
        };
        self.record(true);
        if let Some(error) = answer.get("error") {
            let mut e = GzError::new(
                ErrorCode::JsonRpcError,
                format!(
                    "{}/{method} failed: {} (JSON-RPC error {})",
                    self.protocol,
                    error
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("no message"),
                    error.get("code").map(Value::to_string).unwrap_or_default()
                ),
            )
            .at(format!("provider {}", self.protocol));
            e.details = json!({"error": error});
            return Err(e);
        }
        let Some(result) = answer.get("result") else {
            return Err(failed(
                self.protocol,
                "answer has neither `result` nor `error`",
            ));
        };
        Ok(json!({"result": result}))
    }
}

#[async_trait]
impl Provider for JsonRpcProvider {
    fn protocol(&self) -> &'static str {
        self.protocol
    }

    fn methods(&self) -> Vec<MethodInfo> {
        self.spec
            .methods
            .iter()
            .map(|(name, m)| MethodInfo {
                method: format!("{}/{name}", self.protocol),
                description: m.description.clone().unwrap_or_default(),
            })
            .collect()
    }

    async fn call(&self, method: &str, params: Value, ctx: &CallContext) -> Result<Value, GzError> {
        let name = method.split_once('/').map_or(method, |(_, m)| m);
        let params = match params {
            Value::Object(mut map) => {
                // Task plumbing, not the method's params.
                map.remove("timeout");
                Value::Object(map)
            }
            other => other,
        };
        tokio::select! {
            result = self.invoke(name, params) => result,
            _ = ctx.cancel.cancelled() => Err(GzError::new(ErrorCode::TaskCancelled, "cancelled")),
        }
    }

    async fn health(&self) -> crate::ProviderHealth {
        let circuit = self.circuit.lock().unwrap_or_else(|p| p.into_inner());
        let transport = match &self.spec.transport.url {
            Some(url) => json!({"url": url}),
            None => json!({"command": self.spec.transport.command}),
        };
        let detail = json!({"version": self.spec.version, "transport": transport, "failures": circuit.failures});
        match circuit.opened {
            Some(_) => crate::ProviderHealth {
                status: crate::HealthStatus::Unhealthy,
                reason: Some(format!("circuit open after {} failures", circuit.failures)),
                detail,
            },
            None => crate::ProviderHealth::healthy(detail),
        }
    }

    async fn shutdown(&self) {
        let processes: Vec<Process> = self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for mut p in processes {
            let _ = p.child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests;
