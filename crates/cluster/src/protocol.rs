//! What travels through Redis. Every payload is versioned: a worker refuses a
//! cluster of another protocol version at start, and an entry it cannot read
//! goes to the dead letters instead of crashing anything.

use gleitzeit_core::{GzError, Requires};
use gleitzeit_runtime::TaskCall;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// 2: task calls carry the file grant (`call.files`) that workers enforce; a
/// version-1 worker would ignore it, so it refuses these entries.
pub const PROTOCOL_VERSION: u32 = 2;

/// One queue entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskMessage {
    pub v: u32,
    pub call: TaskCall,
    pub dispatched_ms: i64,
}

/// What a queue holds, so a worker can tell whether it may read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueMeta {
    pub protocol: String,
    #[serde(default)]
    pub requires: Requires,
}

/// A call's outcome as workers record it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok(Value),
    Err(GzError),
}

impl Outcome {
    pub fn into_result(self) -> Result<Value, GzError> {
        match self {
            Outcome::Ok(v) => Ok(v),
            Outcome::Err(e) => Err(e),
        }
    }
}

impl From<Result<Value, GzError>> for Outcome {
    fn from(result: Result<Value, GzError>) -> Outcome {
        match result {
            Ok(v) => Outcome::Ok(v),
            Err(e) => Outcome::Err(e),
        }
    }
}

/// A worker node as it describes itself on every heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// The gleitzeit version it runs.
    pub version: String,
    pub protocol: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub gpu: bool,
    /// Protocols it runs (`python`, `llm`, `function`, …).
    pub capabilities: Vec<String>,
    pub concurrency: usize,
    pub running: usize,
    pub completed: u64,
    pub failed: u64,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    /// `active`, `lost` (stopped heartbeating) or `left` (stopped cleanly);
    /// kept apart from the node's own record, which only the node writes.
    #[serde(default)]
    pub state: String,
}

/// A node as the API shows it: the same fields, which the node's record
/// keeps under its own (protocol-versioned) format.
impl From<NodeInfo> for gleitzeit_api::system::NodeView {
    fn from(node: NodeInfo) -> Self {
        gleitzeit_api::system::NodeView {
            id: node.id,
            host: node.host,
            pid: node.pid,
            version: node.version,
            protocol: node.protocol,
            labels: node.labels,
            gpu: node.gpu,
            capabilities: node.capabilities,
            concurrency: node.concurrency,
            running: node.running,
            completed: node.completed,
            failed: node.failed,
            started_ms: node.started_ms,
            heartbeat_ms: node.heartbeat_ms,
            state: node.state,
        }
    }
}

/// An entry no worker could finish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The queue entry id.
    pub id: String,
    pub stream: String,
    pub reason: String,
    pub deliveries: u64,
    /// Node ids that held it, in order.
    pub holders: Vec<String>,
    pub at_ms: i64,
    #[serde(default)]
    pub workflow_id: Option<String>,
    #[serde(default)]
    pub task_id: Option<String>,
    #[serde(default)]
    pub attempt: Option<u32>,
    /// The entry as it was on the queue, to put it back on retry.
    pub payload: String,
}
