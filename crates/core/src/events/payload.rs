//! What each kind of event carries. The field names are the wire keys that
//! clients (the CLI, the monitor, the dashboard, the Python client) read, so a
//! rename here is a breaking change for all of them.

use crate::GzError;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Keeps a key that is present with `null` as `Some(Value::Null)`, so an
/// event read back serializes exactly as it was written.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// The task a task event is about and the attempt it concerns. Every task
/// event carries these keys after its own (flattened: on the wire they sit
/// beside the kind's fields, as they always have).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskRef {
    pub task_id: String,
    /// The task's `name`, else its id.
    pub task_name: String,
    pub method: String,
    pub attempt: u32,
}

/// The task attempt a streamed piece (a token, an output line) belongs to;
/// the keys come before the piece's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AttemptRef {
    pub task_id: String,
    /// The task's `name`, else its id.
    pub task_name: String,
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowStarted {
    pub name: String,
    pub total_tasks: usize,
    /// Whether the run picks up a workflow an earlier process left unfinished.
    pub resumed: bool,
    /// What started it, when a schedule, webhook or folder did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<crate::triggers::RunTrigger>,
}

/// Sent after every task that reaches a terminal state by itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowProgress {
    pub completed_tasks: usize,
    pub failed_tasks: usize,
    pub skipped_tasks: usize,
    pub total_tasks: usize,
}

/// The three ends of a workflow carry the same fields; they are separate
/// types so each kind has its own schema.
macro_rules! workflow_end {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
        pub struct $name {
            pub name: String,
            /// The workflow's state as stored (`completed`, `failed`, `cancelled`).
            pub state: String,
            /// The primary result of each completed task by display name.
            /// Absent when the workflow was ended without running it (a
            /// cancel of a workflow no process runs).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schema(value_type = Option<Object>)]
            pub task_results: Option<Map<String, Value>>,
            /// Why it did not complete; always sent, `null` on success.
            #[schema(value_type = Option<Object>)]
            pub error: Option<GzError>,
        }
    )*};
}

workflow_end! {
    WorkflowCompleted;
    WorkflowFailed;
    WorkflowCancelled;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskStarted {
    /// For a fan-out: how many instances it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<usize>,
    #[serde(flatten)]
    pub task: TaskRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskCompleted {
    /// The task's primary field (`response`, `result`, …).
    pub result: Value,
    /// The first 4000 characters of a non-empty `stdout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    pub duration_ms: i64,
    /// Present (and `true`) when the result came from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<bool>,
    pub duration_seconds: f64,
    // LLM accounting, copied from the result record as it is there, so that
    // metrics and clients need not fetch the result.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Object>)]
    pub usage: Option<Value>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub model: Option<Value>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub endpoint: Option<Value>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub first_token_ms: Option<Value>,
    /// The provider's own `duration_ms`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub provider_ms: Option<Value>,
    #[serde(flatten)]
    pub task: TaskRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskRetrying {
    pub next_attempt: u32,
    pub delay_seconds: f64,
    /// The failure of the attempt that is retried; always sent.
    #[schema(value_type = Option<Object>)]
    pub error: Option<GzError>,
    #[serde(flatten)]
    pub task: TaskRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskFailed {
    #[schema(value_type = Object)]
    pub error: GzError,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    #[serde(flatten)]
    pub task: TaskRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskSkipped {
    /// Which dependency or condition caused it, in words.
    pub reason: String,
    #[serde(flatten)]
    pub task: TaskRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskCancelled {
    #[serde(flatten)]
    pub task: TaskRef,
}

/// One streamed token, as clients receive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LlmToken {
    #[serde(flatten)]
    pub task: AttemptRef,
    pub token: String,
}

/// Consecutive tokens of one task attempt as they are stored; readers turn
/// it into [`LlmToken`]s with [`super::expand`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LlmTokens {
    #[serde(flatten)]
    pub task: AttemptRef,
    pub tokens: Vec<String>,
}

impl LlmTokens {
    /// Whether `token` belongs to this chunk's task attempt.
    pub fn same_attempt(&self, token: &LlmToken) -> bool {
        self.task == token.task
    }
}

/// One line a task printed while it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskOutput {
    #[serde(flatten)]
    pub task: AttemptRef,
    pub line: String,
}

/// A tool call as the model asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolCallRequest {
    /// Unique within the task's transcript.
    pub id: String,
    pub name: String,
    /// A JSON object.
    #[schema(value_type = Object)]
    pub arguments: Value,
}

/// One model turn of an `llm/agent` task. It is the loop's journal: a run
/// resumed after a crash rebuilds the transcript from these and
/// `tool_call_completed` events instead of asking the model again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentTurn {
    pub task_id: String,
    pub task_name: String,
    pub attempt: u32,
    /// From 1.
    pub turn: u32,
    /// The text the model wrote this turn (the answer, on the last turn).
    pub response: String,
    /// The tools it asked for; empty on the final turn.
    pub tool_calls: Vec<ToolCallRequest>,
    /// Prompt/completion tokens of this turn's call.
    #[schema(value_type = Option<Object>)]
    pub usage: Option<Value>,
    pub cost_usd: Option<f64>,
    pub model: Option<String>,
    pub endpoint: Option<String>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolCallStarted {
    pub task_id: String,
    pub task_name: String,
    pub attempt: u32,
    pub turn: u32,
    pub call_id: String,
    pub name: String,
    #[schema(value_type = Object)]
    pub arguments: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolCallCompleted {
    pub task_id: String,
    pub task_name: String,
    pub attempt: u32,
    pub turn: u32,
    pub call_id: String,
    pub name: String,
    /// The tool's primary result; absent when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Why it failed (the model is told, or the task fails, per
    /// `on_tool_error`); absent when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub error: Option<GzError>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeJoined {
    pub node_id: String,
    pub host: String,
    pub labels: BTreeMap<String, String>,
    pub gpu: bool,
    pub capabilities: Vec<String>,
    /// Present (and `true`) when a node that was marked lost came back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejoined: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeLeft {
    pub node_id: String,
    pub host: String,
    pub labels: BTreeMap<String, String>,
    pub gpu: bool,
    pub capabilities: Vec<String>,
    /// `shutdown` or `heartbeat_timeout`.
    pub reason: String,
    /// For a heartbeat timeout: how long the node had been silent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_ms: Option<i64>,
}

/// A stored or received event this version cannot decode as its kind: a
/// kind it does not know (written by a newer version) or data that does not
/// fit the kind. It is kept as it came and serializes back unchanged, so
/// reads and streams go on past it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UndecodedEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Value,
}
