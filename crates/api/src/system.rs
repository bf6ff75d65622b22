//! Providers, worker nodes, built-in functions and the error registry.

use crate::health::ProviderHealthView;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// `GET /api/v1/providers`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProviderList {
    pub providers: Vec<ProviderEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProviderEntry {
    pub protocol: String,
    /// Each method's name, description and parameters.
    #[schema(value_type = Vec<Object>)]
    pub methods: Value,
    /// Only with `check=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<ProviderHealthView>,
}

/// `GET /api/v1/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeList {
    /// Whether this server hands tasks to worker nodes.
    pub scale_out: bool,
    pub nodes: Vec<NodeView>,
}

/// A worker node as it describes itself on every heartbeat, with the state
/// the server keeps for it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// The gleitzeit version it runs.
    pub version: String,
    pub protocol: u32,
    pub labels: BTreeMap<String, String>,
    pub gpu: bool,
    /// Protocols it runs (`python`, `llm`, `function`, …).
    pub capabilities: Vec<String>,
    pub concurrency: usize,
    pub running: usize,
    pub completed: u64,
    pub failed: u64,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    /// `active`, `lost` (stopped heartbeating) or `left` (stopped cleanly).
    pub state: String,
}

/// `GET /api/v1/functions`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FunctionList {
    /// Each function's name, description and arguments.
    #[schema(value_type = Vec<Object>)]
    pub functions: Value,
}

/// `GET /api/v1/errors`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorList {
    /// Each code's name, domain, severity, retryability, message and hint.
    #[schema(value_type = Vec<Object>)]
    pub errors: Value,
}
