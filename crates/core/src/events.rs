//! Events announce state changes after they are committed. Names follow the
//! earlier versions (`workflow_started`, `task_completed`, …) so existing clients
//! and scripts keep working.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const WORKFLOW_STARTED: &str = "workflow_started";
pub const WORKFLOW_PROGRESS: &str = "workflow_progress";
pub const WORKFLOW_COMPLETED: &str = "workflow_completed";
pub const WORKFLOW_FAILED: &str = "workflow_failed";
pub const WORKFLOW_CANCELLED: &str = "workflow_cancelled";
pub const TASK_STARTED: &str = "task_started";
pub const TASK_COMPLETED: &str = "task_completed";
pub const TASK_FAILED: &str = "task_failed";
pub const TASK_RETRYING: &str = "task_retrying";
pub const TASK_SKIPPED: &str = "task_skipped";
pub const TASK_CANCELLED: &str = "task_cancelled";
pub const LLM_TOKEN: &str = "llm_token";
pub const TASK_OUTPUT: &str = "task_output";
/// Worker nodes (scale-out); their events carry an empty `workflow_id`.
pub const NODE_JOINED: &str = "node_joined";
pub const NODE_LEFT: &str = "node_left";

pub const ALL: &[&str] = &[
    WORKFLOW_STARTED,
    WORKFLOW_PROGRESS,
    WORKFLOW_COMPLETED,
    WORKFLOW_FAILED,
    WORKFLOW_CANCELLED,
    TASK_STARTED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_RETRYING,
    TASK_SKIPPED,
    TASK_CANCELLED,
    LLM_TOKEN,
    TASK_OUTPUT,
    NODE_JOINED,
    NODE_LEFT,
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the store's event log; 0 for events that are not stored
    /// (token streams).
    #[serde(default)]
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub workflow_id: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub data: Value,
}
