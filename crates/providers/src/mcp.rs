//! `mcp/list_tools` and `mcp/call_tool`: tools of MCP servers declared in
//! config, through the official Rust SDK (rmcp). A server is a command spoken
//! to over stdio, or a streamable-HTTP URL (with an optional bearer token read
//! from an environment variable). One connection per server is kept and
//! shared; if the server dies, the next call connects again.

use crate::{CallContext, MethodInfo, Provider};
use async_trait::async_trait;
use gleitzeit_core::{ErrorCode, GzError};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct McpServerConfig {
    /// Program and arguments of a stdio server.
    pub command: Vec<String>,
    /// Environment for the stdio server.
    pub env: BTreeMap<String, String>,
    /// Working directory for the stdio server.
    pub cwd: Option<String>,
    /// URL of a streamable-HTTP server (instead of `command`).
    pub url: Option<String>,
    /// Environment variable holding a bearer token for `url` (never printed).
    pub token_env: Option<String>,
    /// Per-call limit, seconds (default 60).
    pub timeout_secs: Option<f64>,
}

type Client = RunningService<RoleClient, ()>;

pub struct McpProvider {
    servers: BTreeMap<String, McpServerConfig>,
    connections: Mutex<HashMap<String, Arc<Client>>>,
}

fn invalid(message: impl Into<String>) -> GzError {
    GzError::new(ErrorCode::InvalidParameters, message)
}

fn server_failed(server: &str, why: impl std::fmt::Display) -> GzError {
    GzError::new(
        ErrorCode::McpServerFailed,
        format!("MCP server `{server}`: {why}"),
    )
    .at(format!("mcp server {server}"))
}

impl McpProvider {
    pub fn new(servers: BTreeMap<String, McpServerConfig>) -> McpProvider {
        McpProvider {
            servers,
            connections: Mutex::default(),
        }
    }

    pub fn server_names(&self) -> Vec<String> {
        self.servers.keys().cloned().collect()
    }

    fn config(&self, server: &str) -> Result<&McpServerConfig, GzError> {
        self.servers.get(server).ok_or_else(|| {
            let known = self.server_names();
            invalid(format!("no MCP server `{server}` in config"))
                .with_hint(if known.is_empty() {
                    "Declare servers under `mcp_servers:` in config, e.g. `mcp_servers: {files: {command: [npx, -y, @modelcontextprotocol/server-filesystem, /tmp]}}`.".to_string()
                } else {
                    format!("Configured servers: {}.", known.join(", "))
                })
        })
    }

    async fn connect(&self, name: &str) -> Result<Arc<Client>, GzError> {
        let mut connections = self.connections.lock().await;
        if let Some(client) = connections.get(name) {
            if !client.is_transport_closed() {
                return Ok(client.clone());
            }
            connections.remove(name);
        }
        let config = self.config(name)?;
        // A server that never completes the handshake must not hang the task.
        let limit = Duration::from_secs_f64(config.timeout_secs.unwrap_or(60.0).clamp(0.1, 300.0));
        let handshake = |e: String| server_failed(name, e);
        let client = if let Some(url) = &config.url {
            let mut transport_config =
                rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(url.clone());
            if let Some(var) = &config.token_env {
                let token = std::env::var(var).map_err(|_| {
                    server_failed(
                        name,
                        format!("environment variable {var} (its bearer token) is not set"),
                    )
                })?;
                transport_config.auth_header = Some(token);
            }
            let transport = rmcp::transport::StreamableHttpClientTransport::with_client(
                reqwest13_client(),
                transport_config,
            );
            tokio::time::timeout(limit, ().serve(transport))
                .await
                .map_err(|_| {
                    handshake(format!(
                        "no MCP handshake from {url} within {:.0} s",
                        limit.as_secs_f64()
                    ))
                })?
                .map_err(|e| handshake(format!("cannot connect to {url}: {e}")))?
        } else {
            let Some((program, args)) = config.command.split_first() else {
                return Err(server_failed(
                    name,
                    "has neither `command` nor `url` in config",
                ));
            };
            let mut command = tokio::process::Command::new(program);
            command.args(args).envs(&config.env);
            if let Some(cwd) = &config.cwd {
                command.current_dir(cwd);
            }
            // The server's stderr is its log: kept off the user's terminal
            // (it would tear the progress view), shown with `-v`.
            let (transport, stderr) = rmcp::transport::TokioChildProcess::builder(command)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| server_failed(name, format!("cannot start `{program}`: {e}")))?;
            if let Some(stderr) = stderr {
                let server = name.to_string();
                tokio::spawn(async move {
                    use tokio::io::AsyncBufReadExt;
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::debug!("mcp server {server}: {line}");
                    }
                });
            }
            tokio::time::timeout(limit, ().serve(transport))
                .await
                .map_err(|_| {
                    handshake(format!(
                        "`{program}` did not complete the MCP handshake within {:.0} s",
                        limit.as_secs_f64()
                    ))
                })?
                .map_err(|e| handshake(format!("did not complete the MCP handshake: {e}")))?
        };
        let client = Arc::new(client);
        connections.insert(name.to_string(), client.clone());
        Ok(client)
    }

    /// Runs `op` on the server's connection. A broken connection is replaced
    /// on the next call; `idempotent` operations are also tried once more at
    /// once (a tool call is not: it may have done its work before the server
    /// died).
    async fn with_client<T, F, Fut>(
        &self,
        server: &str,
        idempotent: bool,
        op: F,
    ) -> Result<T, GzError>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, rmcp::ServiceError>>,
    {
        let timeout = Duration::from_secs_f64(self.config(server)?.timeout_secs.unwrap_or(60.0));
        for attempt in 0..2 {
            let client = self.connect(server).await?;
            match tokio::time::timeout(timeout, op(client.clone())).await {
                Err(_) => {
                    return Err(GzError::new(
                        ErrorCode::TaskTimeout,
                        format!(
                            "MCP server `{server}` did not answer within {:.0} s",
                            timeout.as_secs_f64()
                        ),
                    ))
                }
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => {
                    let transport = client.is_transport_closed()
                        || matches!(
                            error,
                            rmcp::ServiceError::TransportClosed
                                | rmcp::ServiceError::TransportSend(_)
                        );
                    if transport {
                        self.connections.lock().await.remove(server);
                        if idempotent && attempt == 0 {
                            continue;
                        }
                    }
                    return Err(match error {
                        rmcp::ServiceError::McpError(data) => GzError::new(
                            ErrorCode::McpToolError,
                            format!(
                                "MCP server `{server}` answered error {}: {}",
                                data.code.0, data.message
                            ),
                        )
                        .at(format!("mcp server {server}")),
                        other => server_failed(server, other),
                    });
                }
            }
        }
        Err(server_failed(server, "the connection kept failing"))
    }

    async fn list_tools(&self, params: &Value) -> Result<Value, GzError> {
        let server = server_param(params)?;
        let tools = self
            .with_client(&server, true, |c| async move { c.list_all_tools().await })
            .await?;
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.input_schema.as_ref(),
                })
            })
            .collect();
        Ok(json!({ "result": tools, "server": server }))
    }

    async fn call_tool(&self, params: &Value) -> Result<Value, GzError> {
        let server = server_param(params)?;
        let tool = params
            .get("tool")
            .or_else(|| params.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("mcp/call_tool needs `tool`"))?
            .to_string();
        let arguments = match params.get("arguments").or_else(|| params.get("args")) {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map.clone()),
            Some(_) => return Err(invalid("`arguments` must be a mapping")),
        };
        let started = Instant::now();
        let result = self
            .with_client(&server, false, |c| {
                let mut request = CallToolRequestParams::new(tool.clone());
                if let Some(arguments) = arguments.clone() {
                    request = request.with_arguments(arguments);
                }
                async move { c.call_tool(request).await }
            })
            .await?;
        let text: Vec<String> = result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect();
        let text = text.join("\n");
        if result.is_error == Some(true) {
            return Err(GzError::new(
                ErrorCode::McpToolError,
                format!("MCP tool `{tool}` on `{server}` failed: {text}"),
            )
            .at(format!("mcp server {server}")));
        }
        let primary = result
            .structured_content
            .clone()
            .unwrap_or_else(|| json!(text));
        Ok(json!({
            "result": primary,
            "text": text,
            "content": serde_json::to_value(&result.content).unwrap_or(Value::Null),
            "server": server,
            "tool": tool,
            "duration_ms": started.elapsed().as_millis() as u64,
        }))
    }

    /// Tools of every configured server, for `providers list` (servers that
    /// fail are reported with their error).
    pub async fn catalog(&self) -> Value {
        let mut out = serde_json::Map::new();
        for name in self.server_names() {
            let entry = match self.list_tools(&json!({"server": name})).await {
                Ok(v) => {
                    json!({"tools": v["result"].as_array().map(|t| t.iter().map(|x| x["name"].clone()).collect::<Vec<_>>())})
                }
                Err(e) => json!({"error": format!("{} {}", e.code, e.message)}),
            };
            out.insert(name, entry);
        }
        Value::Object(out)
    }
}

fn server_param(params: &Value) -> Result<String, GzError> {
    params
        .get("server")
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| invalid("MCP methods need `server` (a name from `mcp_servers` in config)"))
}

/// rmcp's HTTP transport brings its own reqwest major version.
fn reqwest13_client() -> rmcp_reqwest::Client {
    rmcp_reqwest::Client::new()
}

#[async_trait]
impl Provider for McpProvider {
    fn protocol(&self) -> &'static str {
        "mcp"
    }

    fn methods(&self) -> Vec<MethodInfo> {
        vec![
            MethodInfo {
                method: "mcp/list_tools".into(),
                description: format!(
                    "tools of an MCP server ({})",
                    self.server_names().join(", ")
                ),
            },
            MethodInfo {
                method: "mcp/call_tool".into(),
                description: "call a tool: server, tool, arguments".into(),
            },
        ]
    }

    async fn call(&self, method: &str, params: Value, ctx: &CallContext) -> Result<Value, GzError> {
        let work = async {
            match method {
                "mcp/list_tools" => self.list_tools(&params).await,
                "mcp/call_tool" => self.call_tool(&params).await,
                other => Err(GzError::new(
                    ErrorCode::ProviderUnavailable,
                    format!("the mcp provider has no method `{other}`"),
                )),
            }
        };
        tokio::select! {
            result = work => result,
            _ = ctx.cancel.cancelled() => Err(GzError::new(ErrorCode::TaskCancelled, "cancelled")),
        }
    }

    async fn health(&self) -> crate::ProviderHealth {
        let catalog = self.catalog().await;
        let failing: Vec<String> = catalog
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.get("error").is_some())
            .map(|(k, _)| k.clone())
            .collect();
        crate::ProviderHealth {
            status: if failing.is_empty() {
                crate::HealthStatus::Healthy
            } else {
                crate::HealthStatus::Degraded
            },
            reason: (!failing.is_empty())
                .then(|| format!("MCP servers failing: {}", failing.join(", "))),
            detail: catalog,
        }
    }

    async fn shutdown(&self) {
        let connections: Vec<Arc<Client>> = self
            .connections
            .lock()
            .await
            .drain()
            .map(|(_, c)| c)
            .collect();
        for client in connections {
            if let Ok(mut client) = Arc::try_unwrap(client) {
                let _ = client.close().await;
            }
        }
    }
}
