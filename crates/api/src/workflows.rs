//! `/api/v1/workflows…` and `/api/v1/events…`: what submitting, listing,
//! reading, cancelling and resuming answer, and the pages of stored events.

use crate::views::TaskView;
use gleitzeit_core::events::Event;
use gleitzeit_core::model::{Backoff, RetryPolicy};
use gleitzeit_core::{ErrorCode, TaskSpec, WorkflowState};
use gleitzeit_store::WorkflowSummary;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// `POST /api/v1/workflows`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubmitResponse {
    pub workflow_id: String,
    pub name: String,
    /// `pending` until the run starts a moment later.
    pub state: String,
    pub total_tasks: usize,
    /// Where to follow it: the workflow and its event stream.
    pub links: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// pending, running, completed, failed, cancelled
    pub state: Option<String>,
    /// Page size, 1–1000 (default 20).
    pub limit: Option<usize>,
    /// Skip this many (newest first).
    pub offset: Option<usize>,
    /// Only the runs this schedule started.
    pub schedule: Option<String>,
}

/// A workflow as lists show it: its counts, not its tasks.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowSummaryView {
    pub id: String,
    pub name: String,
    /// pending, running, completed, failed, cancelled
    #[schema(value_type = String)]
    pub state: WorkflowState,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    pub total: u32,
    pub completed: u32,
    pub failed: u32,
}

impl From<WorkflowSummary> for WorkflowSummaryView {
    fn from(summary: WorkflowSummary) -> WorkflowSummaryView {
        WorkflowSummaryView {
            id: summary.id,
            name: summary.name,
            state: summary.state,
            created_ms: summary.created_ms,
            finished_ms: summary.finished_ms,
            total: summary.total,
            completed: summary.completed,
            failed: summary.failed,
        }
    }
}

/// `GET /api/v1/workflows`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowSummaryView>,
    pub limit: usize,
    pub offset: usize,
}

/// What cancel and resume answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StateResponse {
    pub workflow_id: String,
    pub state: String,
    pub cancel_requested: bool,
    /// Cancel: the workflow had already finished, so there was nothing to
    /// cancel and `state` is how it ended. Resume answers `false` (it refuses
    /// a finished workflow). Absent from servers before it was added.
    #[serde(default)]
    pub was_terminal: bool,
}

/// `GET /api/v1/workflows/{id}/tasks/{task_id}`: the task's view, and what
/// the workflow file asked of it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: TaskView,
    pub workflow_id: String,
    /// Absent only when the stored workflow no longer lists the task.
    #[serde(flatten)]
    pub spec: Option<TaskFromFile>,
}

/// A task as written in the workflow file: parameters with references
/// unresolved, and the retry policy its attempts are measured against.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskFromFile {
    pub name: Option<String>,
    pub parameters: Value,
    pub retry: RetryView,
    /// Seconds.
    pub timeout: Option<f64>,
}

impl TaskFromFile {
    pub fn new(spec: &TaskSpec) -> TaskFromFile {
        TaskFromFile {
            name: spec.name.clone(),
            parameters: spec.params.clone(),
            retry: RetryView::new(&spec.retry),
            timeout: spec.timeout,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only events after this id.
    pub after: Option<u64>,
    /// At most this many (default 1000, max 10000).
    pub limit: Option<usize>,
    /// Comma-separated event types.
    pub types: Option<String>,
}

/// `GET /api/v1/workflows/{id}/events`: one page of the log, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Pass as `after` for the next page (the last id read).
    pub next_after: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HeadQuery {
    /// Only this workflow's newest event (id or a unique prefix).
    pub workflow_id: Option<String>,
}

/// `GET /api/v1/events/head`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventHead {
    pub latest_event_seq: u64,
}

/// `POST /api/v1/stream-tickets`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StreamTicket {
    /// Pass as `?ticket=` to `/api/v1/events` or `/api/v1/ws`; works once.
    pub ticket: String,
    /// Seconds until the ticket is void if unused.
    pub expires_in: u64,
}

/// A task's retry policy as its workflow file set it (or the default).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RetryView {
    /// Total attempts, the first included. 1 means no retry.
    pub max_attempts: u32,
    /// Seconds.
    pub base_delay: f64,
    /// Seconds; caps every delay.
    pub max_delay: f64,
    /// exponential, linear or fixed
    #[schema(value_type = String)]
    pub strategy: Backoff,
    pub jitter: bool,
    /// When not empty, only errors with these codes are retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub retry_on: Vec<ErrorCode>,
}

impl RetryView {
    pub fn new(policy: &RetryPolicy) -> RetryView {
        RetryView {
            max_attempts: policy.max_attempts,
            base_delay: policy.base_delay,
            max_delay: policy.max_delay,
            strategy: policy.strategy,
            jitter: policy.jitter,
            retry_on: policy.retry_on.clone(),
        }
    }
}
